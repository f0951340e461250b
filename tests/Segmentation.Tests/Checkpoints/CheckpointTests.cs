using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Training;

namespace Segmentation.Tests.Checkpoints;

/// <summary>The hand-off file: it carries the preprocessing a predictor needs, and knows no trainer.</summary>
public class CheckpointTests
{
    private static Checkpoint Make(UNet model, Preprocessing preprocessing, TrainerOptions trainer) => new()
    {
        Model = model.Options,
        Dataset = new DatasetDescription { Classes = 2, ClassNames = new[] { "a", "b" }, ClassColors = new[] { new Rgb(0, 0, 0), new Rgb(255, 0, 0) } },
        Preprocessing = preprocessing, TrainerSettings = trainer.ToJson(), State = new TrainingState(),
        Weights = Checkpoint.SerializeWeights(model),
    };

    [Fact]
    public void The_resize_is_stored_with_the_normalisation_and_the_predictor_uses_it()
    {
        using var dir = new TempDir();
        using var model = new UNet(new UNetOptions { InChannels = 3, Classes = 2, BaseChannels = 4, Depth = 2, Seed = 1 });
        var normalization = new Normalization(new[] { 0.1f, 0.2f, 0.3f }, new[] { 0.5f, 0.6f, 0.7f });
        Make(model, new Preprocessing(normalization, new Size2(24, 32)), new TrainerOptions()).Save(dir["a.ckpt"]);

        var loaded = Checkpoint.Load(dir["a.ckpt"]);
        Assert.Equal(new Size2(24, 32), loaded.Preprocessing.Size);
        Assert.Equal(normalization.Mean, loaded.Preprocessing.Normalization.Mean);
        Assert.Equal(normalization.Std, loaded.Preprocessing.Normalization.Std);
        using var predictor = new Predictor(loaded, new PredictorOptions { Device = "cpu" });
        Assert.Equal(new Size2(24, 32), predictor.Options.Size);
    }

    [Fact]
    public void A_checkpoint_from_before_the_resize_key_takes_the_size_from_the_trainers_options()
    {
        using var dir = new TempDir();
        using var model = new UNet(new UNetOptions { InChannels = 3, Classes = 2, BaseChannels = 4, Depth = 2, Seed = 1 });
        // What 0.2 wrote: the size only inside the trainer's options.
        Make(model, new Preprocessing(Normalization.ImageNet), new TrainerOptions { Size = new Size2(40, 48) }).Save(dir["old.ckpt"]);

        var loaded = Checkpoint.Load(dir["old.ckpt"]);
        Assert.Equal(new Size2(40, 48), loaded.Preprocessing.Size);
        Assert.Equal(new Size2(40, 48), TrainerOptions.FromCheckpoint(loaded).Size);
    }

    [Fact]
    public void Model_options_written_with_the_old_Normalization_name_read_as_Norm()
    {
        var json = System.Text.Json.JsonSerializer.Serialize(new UNetOptions { Norm = NormLayer.Group }, Checkpoint.Json);
        var old = json.Replace("\"Norm\"", "\"Normalization\"");
        Assert.DoesNotContain("\"Norm\"", old);
        var read = System.Text.Json.JsonSerializer.Deserialize<UNetOptions>(old, Checkpoint.Json)!;
        Assert.Equal(NormLayer.Group, read.Norm);
        Assert.DoesNotContain("Normalization", json); // new files say Norm only
    }
}
