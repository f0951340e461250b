using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Training;

namespace Segmentation.Tests.Training;

/// <summary>
/// The hold-out of a <c>--val-split</c> run is drawn with <c>--split-seed</c> when given, so runs that differ only in
/// their training seed are scored on the same images; without it, with the training seed, as every run before it (and
/// their resumes) did.
/// </summary>
public class SplitSeedTests
{
    private static string[] Validation(int seed, int? splitSeed)
    {
        var config = new RunConfig
        {
            Data = "builtin:shapes?count=40&size=32", DataOptions = new DatasetOptions(),
            Model = ModelDescription.UNet(classes: 4), Trainer = new TrainerOptions { Seed = seed },
            SplitSeed = splitSeed,
        };
        var (_, val) = config.OpenData();
        return Enumerable.Range(0, val!.Count).Select(i => val.Load(i).Name).Order(StringComparer.Ordinal).ToArray();
    }

    [Fact]
    public void A_split_seed_keeps_the_validation_images_when_the_training_seed_changes()
    {
        Assert.Equal(8, Validation(0, null).Length);
        Assert.NotEqual(Validation(0, null), Validation(1, null)); // the training seed drew the split
        Assert.Equal(Validation(0, null), Validation(1, splitSeed: 0));
        Assert.Equal(Validation(7, splitSeed: 3), Validation(2, splitSeed: 3));
        Assert.NotEqual(Validation(0, splitSeed: 0), Validation(0, splitSeed: 5));
    }

    [Fact]
    public void The_split_seed_travels_in_run_json()
    {
        using var d = new TempDir();
        var config = new RunConfig
        {
            Data = "builtin:shapes", DataOptions = new DatasetOptions(), Model = ModelDescription.UNet(classes: 4),
            Trainer = new TrainerOptions(), SplitSeed = 5,
        };
        config.Save(d["run.json"]);
        Assert.Equal(5, RunConfig.Load(d["run.json"]).SplitSeed);
    }
}
