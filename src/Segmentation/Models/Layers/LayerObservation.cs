using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// One forward pass that only watches: eval mode (no statistic changes), the model's own layer check off, an observer
/// on each given layer, and everything put back after. The checks and the summary learn what each layer really sees
/// this way.
/// </summary>
internal static class LayerObservation
{
    /// <summary>Each module of <paramref name="model"/> and its state-dict prefix.</summary>
    public static Dictionary<nn.Module, string> Names(nn.Module model)
    {
        var names = new Dictionary<nn.Module, string>(ReferenceEqualityComparer.Instance);
        foreach (var (name, module) in model.named_modules()) names.TryAdd(module, name);
        return names;
    }

    /// <summary>Runs <paramref name="model"/> once on zeros of <paramref name="inputShape"/> with <paramref
    /// name="observe"/> on <paramref name="layers"/>.</summary>
    public static void Run(nn.Module model, IEnumerable<Layer> layers, Action<Layer, Tensor, Tensor> observe,
        long[] inputShape,
        Device device, bool gradients, IEnumerable<IMultiInputLeaf>? leaves = null, Action<nn.Module, Tensor[],
            Tensor>? observeLeaf = null)
    {
        var watched = layers.ToList();
        var several = leaves?.ToList() ?? new List<IMultiInputLeaf>();
        bool wasTraining = model.training;
        var segmentation = model as SegmentationModel;
        bool selfCheck = segmentation?.VerifyLayers ?? false;
        if (segmentation is not null) segmentation.VerifyLayers = false;
        foreach (var l in watched) l.Observer = observe;
        foreach (var a in several) a.Observer = observeLeaf;
        try
        {
            model.eval();
            using var scope = NewDisposeScope();
            using var grad = gradients ? enable_grad() : no_grad();
            using var input = zeros(inputShape, device: device);
            switch (model)
            {
                case SegmentationModel m: m.forward(input); break;
                case nn.Module<Tensor, Tensor> m: m.forward(input); break;
                default: throw new ArgumentException($"{model.GetType().Name} is not a model from one tensor.");
            }
        }
        finally
        {
            foreach (var l in watched) l.Observer = null;
            foreach (var a in several) a.Observer = null;
            if (wasTraining) model.train();
            if (segmentation is not null) segmentation.VerifyLayers = selfCheck;
        }
    }
}
