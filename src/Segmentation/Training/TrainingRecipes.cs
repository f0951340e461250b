using Segmentation.Models;

namespace Segmentation.Training;

/// <summary>
/// The training recipe of each architecture (<see cref="TrainingRecipe"/>): the library's SegFormer recipe, and any an
/// architecture registered with <see cref="ModelRegistry.AddArchitecture"/> adds here. An architecture without one is
/// trained with <see cref="TrainingRecipe.Default"/>, the U-Nets'. Recipes live here, not beside the architectures,
/// because a model knows nothing of training.
/// </summary>
public static class TrainingRecipes
{
    private static readonly object Gate = new();
    private static readonly Dictionary<string, Func<ModelDescription, bool, TrainingRecipe>> Recipes = new()
    {
        ["segformer"] = (_, pretrained) => TrainingRecipe.Segformer(pretrained),
        ["mask2former"] = (_, pretrained) => TrainingRecipe.Mask2Former(pretrained),
    };

    /// <summary>Registers <paramref name="architecture"/>'s recipe: what <paramref name="recipe"/> gives for a model of
    /// it, with or without a pretrained encoder, is what <see cref="TrainerOptions.Recommended"/> and <c>segment
    /// train</c> start from.</summary>
    public static void Add(string architecture, Func<ModelDescription, bool, TrainingRecipe> recipe)
    {
        if (!ModelRegistry.ArchitectureNames().Any(a => a.Name == architecture))
            throw new OptionsException($"No architecture is registered as '{architecture}' (register it with "
                + "ModelRegistry.AddArchitecture first).");
        lock (Gate)
        {
            if (!Recipes.TryAdd(architecture, recipe))
                throw new OptionsException($"The architecture '{architecture}' has a recipe already.");
        }
    }

    /// <summary>The recipe of <paramref name="model"/>'s architecture, for a pretrained encoder or none.</summary>
    public static TrainingRecipe For(ModelDescription model, bool pretrainedEncoder)
    {
        var known = ModelRegistry.ArchitectureNames().Select(a => a.Name).ToList();
        if (!known.Contains(model.Architecture))
            throw new OptionsException($"No architecture is registered as '{model.Architecture}'; there are: "
                + $"{string.Join(", ", known.Order())}.");
        Func<ModelDescription, bool, TrainingRecipe>? recipe;
        lock (Gate) Recipes.TryGetValue(model.Architecture, out recipe);
        return recipe?.Invoke(model, pretrainedEncoder) ?? TrainingRecipe.Default;
    }
}
