using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Training;

namespace Segmentation.Tests.Training;

/// <summary>The augmentation given as text and as a list is one pipeline.</summary>
public class AugmentationOptionTests
{
    [Fact]
    public void Text_and_list_give_the_same_training()
    {
        const string text = "hflip rot90 elastic(alpha=20,sigma=3,p=1) noise(6)";
        double[] Losses(TrainerOptions o)
        {
            var (train, _) = SegmentationDataset.Shapes(new ShapesOptions { Count = 16, Size = 32, Seed = 4 }).Split(0.75, seed: 0);
            using var model = new SegmentationModel(ModelDescription.UNet(inChannels: 3, classes: 4, baseChannels: 4, depth: 2, seed: 1));
            using var trainer = new Trainer(model, o with { Epochs = 2, BatchSize = 4, Workers = 1, Device = "cpu", ManageProcessMemory = false });
            return trainer.Fit(train, null).History.Select(h => h.TrainLoss).ToArray();
        }
        var fromText = Losses(new TrainerOptions { Augmentation = text });
        var fromList = Losses(new TrainerOptions { Transforms = Augmentations.Parse(text).Transforms });
        var none = Losses(new TrainerOptions { Augment = false });
        Assert.Equal(fromText, fromList);
        Assert.NotEqual(fromText, none);
    }
}
