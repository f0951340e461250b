using System.Text.Json.Nodes;
using Segmentation.Models;
using Segmentation.Training;
using Segmentation.Tests.Cli;
using static TorchSharp.torch;

namespace Segmentation.Tests.Training;

/// <summary>Each architecture's training recipe: the trainer's and the CLI's defaults for it, recorded in run.json.</summary>
public class RecipeTests
{
    private static ModelDescription Segformer => new() { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 3 };

    [Fact]
    public void The_unet_recipe_is_the_trainers_defaults_and_segformers_is_the_papers()
    {
        var unet = TrainerOptions.Recommended(ModelDescription.UNet(classes: 2));
        Assert.Equal(new TrainerOptions() with { Recipe = "unet" }, unet); // no drift between the two

        var finetune = TrainerOptions.Recommended(Segformer, pretrainedEncoder: true);
        Assert.Equal(("segformer-finetune", OptimizerKind.AdamW, 0.01, 1.0), (finetune.Recipe, finetune.Optimizer.Kind, finetune.Optimizer.WeightDecay, finetune.Schedule.PolyPower));
        Assert.Equal(6e-5, finetune.Optimizer.LearningRate * finetune.Optimizer.EncoderLearningRateScale, 12); // the encoder at 6e-5 ...
        Assert.Equal(6e-4, finetune.Optimizer.LearningRate, 12); // ... the decode head at 10x
        var scratch = TrainerOptions.Recommended(Segformer);
        Assert.Equal(("segformer-scratch", 6e-4, 1.0), (scratch.Recipe, scratch.Optimizer.LearningRate, scratch.Optimizer.EncoderLearningRateScale));
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(0.9)]
    public void The_poly_schedule_follows_its_power(double power)
    {
        var schedule = new LearningRateSchedule(ScheduleKind.Poly, 1.0, TotalSteps: 110, WarmupSteps: 10, Power: power);
        Assert.Equal(0.1, schedule.RateAt(0), 12); // warm-up
        Assert.Equal(Math.Pow(0.5, power), schedule.RateAt(60), 12); // half-way through the decay
        Assert.Equal(0, schedule.RateAt(110), 12);
    }

    [Fact]
    public void Segment_train_takes_the_architectures_recipe_for_every_flag_not_given_and_records_it()
    {
        using var d = new TempDir();
        using (var scope = NewDisposeScope())
        using (var pretrained = new SegmentationModel(Segformer with { Seed = 3 }))
        using (var stream = File.Create(d["encoder.safetensors"]))
            TorchSharp.PyBridge.Safetensors.SaveStateDict(stream, pretrained.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value));
        var r = CliResult.Run("train", "--data", "builtin:shapes?count=16&size=32&seed=2", "--arch", "segformer", "--encoder", "mit-b0",
            "--encoder-weights", d["encoder.safetensors"], "--weight-decay", "0.02", "--epochs", "1", "--batch-size", "4", "--workers", "1",
            "--device", "cpu", "--out", d["run"], "--no-tensorboard");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("recipe segformer-finetune", r.Err + r.Out);
        var trainer = JsonNode.Parse(File.ReadAllText(d["run/run.json"]))!["Trainer"]!;
        Assert.Equal("segformer-finetune", (string)trainer["Recipe"]!);
        Assert.Equal(6e-4, (double)trainer["Optimizer"]!["LearningRate"]!, 12);
        Assert.Equal(0.1, (double)trainer["Optimizer"]!["EncoderLearningRateScale"]!, 12);
        Assert.Equal(1.0, (double)trainer["Schedule"]!["PolyPower"]!, 12);
        Assert.Equal(0.02, (double)trainer["Optimizer"]!["WeightDecay"]!, 12); // a flag given wins over the recipe
    }
}
