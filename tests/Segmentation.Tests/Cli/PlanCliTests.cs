using System.Text.Json.Nodes;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Tests.Cli;

/// <summary><c>segment plan</c>, <c>train --plan</c>, and a folder trained with no model flags planning by
/// itself.</summary>
public class PlanCliTests
{
    private static CliResult Run(params string[] args) => CliResult.Run(args);

    /// <summary>Eight 48x48 images, gray and colour mixed, with binary masks of a bright disc.</summary>
    private static void MakeFolder(string dir)
    {
        for (int i = 0; i < 8; i++)
        {
            int cx = 12 + 3 * i, cy = 30 - 2 * i;
            bool In(int x, int y) => (x - cx) * (x - cx) + (y - cy) * (y - cy) < 100;
            if (i % 4 == 0)
                TempDir.SaveRgb(Path.Combine(dir, $"images/{i}.png"), 48, 48, (x, y) => In(x, y)
                    ? new Rgb24(200, 80, 120) : new Rgb24(20, 30, 40));
            else
                TempDir.SaveGray(Path.Combine(dir, $"images/{i}.png"), 48, 48, (x, y) => (byte)(In(x, y) ? 60 + i
                    : 5 + (x + y) % 7));
            TempDir.SaveGray(Path.Combine(dir, $"masks/{i}.png"), 48, 48, (x, y) => (byte)(In(x, y) ? 255 : 0));
        }
    }

    [Fact]
    public void Plan_writes_plan_json_train_follows_it_and_flags_given_win()
    {
        using var d = new TempDir();
        MakeFolder(d["data"]);
        // --encoder unet: the U-Net's two widths are timed (without it the pretrained encoder is planned where its
        // weights are at hand)
        var plan = Run("plan", "--data", d["data"], "--time-limit", "2m", "--threads", "1", "--encoder", "unet",
            "--out", d["plan.json"]);
        Assert.True(plan.Code == 0, plan.Err);
        Assert.Contains("3-channel images (mixed: 6 gray, 2 colour", plan.Out);
        Assert.Contains("fingerprint of the training images", plan.Out);
        Assert.Contains("--normalize", plan.Out);
        var json = JsonNode.Parse(File.ReadAllText(d["plan.json"]))!.AsObject();
        Assert.Equal(48, (int)json["Crop"]!["Height"]!);
        Assert.True(json["Reasons"]!.AsArray().Count >= 6);
        Assert.Equal(2, json["Timings"]!.AsArray().Count);

        // Never replaced unasked.
        var again = Run("plan", "--data", d["data"], "--threads", "1", "--out", d["plan.json"]);
        Assert.Equal(2, again.Code);
        Assert.Contains("exists already", again.Err);

        // colour images: the presets' scale range; an edited range is followed
        Assert.Equal((0.5, 2.0), ((double)json["ScaleMin"]!, (double)json["ScaleMax"]!));
        json["ScaleMin"] = 0.8;
        json["ScaleMax"] = 1.25;
        File.WriteAllText(d["plan.json"], json.ToJsonString());
        var train = Run("train", "--data", d["data"], "--plan", d["plan.json"], "--epochs", "1", "--workers", "1",
            "--device", "cpu", "--out", d["run"], "--no-tensorboard");
        Assert.True(train.Code == 0, train.Err);
        var record = JsonNode.Parse(File.ReadAllText(d["run/run.json"]))!.AsObject();
        Assert.Equal(1, (int)record["Trainer"]!["Epochs"]!); // the flag given wins over the plan's epochs
        Assert.Equal((int)json["BaseChannels"]!, (int)record["Model"]!["Encoder"]!["Options"]!["BaseChannels"]!);
        Assert.Equal(3, (int)record["Model"]!["InChannels"]!);
        Assert.Equal((string)json["Normalize"]!, (string)record["Normalize"]!);
        Assert.Contains("normalisation: ", train.Out);
        Assert.Equal((0.8, 1.25), ((double)record["Trainer"]!["ScaleMin"]!, (double)record["Trainer"]!["ScaleMax"]!));
    }

    [Fact]
    public void Gray_images_are_planned_with_nnunets_scale_range_and_a_bad_range_is_refused()
    {
        using var d = new TempDir();
        for (int i = 0; i < 6; i++)
        {
            TempDir.SaveGray(d[$"data/images/{i}.png"], 48, 48, (x, y) => (byte)((x + 3 * i) % 16 < 8 ? 200 : 40));
            TempDir.SaveGray(d[$"data/masks/{i}.png"], 48, 48, (x, y) => (byte)((x + 3 * i) % 16 < 8 ? 255 : 0));
        }
        var plan = Run("plan", "--data", d["data"], "--time-limit", "2m", "--threads", "1", "--out", d["plan.json"]);
        Assert.True(plan.Code == 0, plan.Err);
        Assert.Contains("--scale 0.7,1.4", plan.Out);
        Assert.Contains("scale 0.7-1.4 (nnU-Net's): gray images", plan.Out);
        var json = JsonNode.Parse(File.ReadAllText(d["plan.json"]))!.AsObject();
        Assert.Equal((0.7, 1.4), ((double)json["ScaleMin"]!, (double)json["ScaleMax"]!));

        foreach (var bad in new[] { "2,1", "0,1", "1", "a,b", "0.5,11", "NaN,1" })
        {
            var r = Run("train", "--data", d["data"], "--scale", bad, "--epochs", "1", "--out", d["never"]);
            Assert.Equal(2, r.Code);
            Assert.Contains($"--scale '{bad}'", r.Err);
            Assert.Contains("0 < MIN <= MAX <= 10", r.Err);
            Assert.False(Directory.Exists(d["never"]));
        }
    }

    /// <summary>plan.json's fields become train's flags: the instance target too, and only when set.</summary>
    [Fact]
    public void A_plans_instance_target_and_full_resolution_skip_become_flags()
    {
        var plan = new Segmentation.Training.TrainingPlan { Task = "instance", BoundaryWidth = 2 };
        Assert.DoesNotContain("--instance-target", Segmentation.Cli.PlanCommand.Arguments(plan));
        var args = Segmentation.Cli.PlanCommand.Arguments(plan with { InstanceTarget = "distance" });
        Assert.Equal("distance", args[args.IndexOf("--instance-target") + 1]);
        var resnet = plan with { Encoder = "mlnet-resnet18", EncoderWeights = "builtin" };
        Assert.DoesNotContain("--full-res-skip", Segmentation.Cli.PlanCommand.Arguments(resnet));
        args = Segmentation.Cli.PlanCommand.Arguments(resnet with { FullResolutionSkip = 16 });
        Assert.Equal("16", args[args.IndexOf("--full-res-skip") + 1]);
    }

    [Fact]
    public void A_full_resolution_skip_on_the_papers_unet_is_refused_before_anything_is_written()
    {
        using var d = new TempDir();
        var r = Run("train", "--full-res-skip", "8", "--epochs", "1", "--out", d["never"]);
        Assert.Equal(2, r.Code);
        Assert.Contains("--full-res-skip 8", r.Err);
        Assert.Contains("ResNet --encoder", r.Err);
        Assert.False(Directory.Exists(d["never"]));
    }

    [Fact]
    public void A_folder_trained_without_model_flags_is_planned_and_the_plan_kept_in_the_run_folder()
    {
        using var d = new TempDir();
        MakeFolder(d["data"]);
        var r = Run("train", "--data", d["data"], "--epochs", "1", "--threads", "1", "--workers", "1", "--device",
            "cpu", "--out", d["run"], "--no-tensorboard");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("no model flags: planning", r.Out);
        Assert.True(File.Exists(d["run/plan.json"]));
        var args = JsonNode.Parse(File.ReadAllText(d["run/run.json"]))!["Arguments"]!.AsArray()
            .Select(a => (string)a!).ToList();
        // the record replays the plan with --config: the pretrained encoder where its weights are in the NuGet cache
        bool weights = Segmentation.Models.Encoders.MlNetResNet18.FindInNuGetCache() is not null;
        Assert.Equal(weights ? "mlnet-resnet18" : "unet", args[args.IndexOf("--encoder") + 1]);
        Assert.Contains(weights ? "--encoder-weights" : "--base-channels", args);
        Assert.Equal("1", args[args.LastIndexOf("--epochs") + 1]);

        // With a model flag there is no plan.
        var flagged = Run("train", "--data", d["data"], "--epochs", "1", "--base-channels", "8", "--depth", "2",
            "--threads", "1", "--workers", "1", "--device", "cpu", "--out", d["run2"], "--no-tensorboard");
        Assert.True(flagged.Code == 0, flagged.Err);
        Assert.DoesNotContain("planning", flagged.Out);
        Assert.False(File.Exists(d["run2/plan.json"]));
    }

    [Fact]
    public void A_guessed_model_flag_gets_the_flags_that_choose_the_model()
    {
        var r = Run("train", "--model", "small");
        Assert.Equal(2, r.Code);
        Assert.Contains("--base-channels", r.Err);
        Assert.Contains("--encoder", r.Err);
        Assert.Contains("plans the model", r.Err);
    }
}
