using Segmentation.Checkpoints;
using Segmentation.Cli;
using Segmentation.Training;

namespace Segmentation.Tests.Cli;

public class CurvePlotTests
{
    [Fact]
    public void Curves_draw_both_losses_and_the_mean_IoU_in_their_colours()
    {
        using var d = new TempDir();
        var history = Enumerable.Range(1, 12).Select(e => new EpochRecord
        {
            Epoch = e, TrainLoss = 2.0 / e, ValLoss = 2.2 / e, MeanIoU = 1 - 0.7 / e,
        }).ToList();
        var path = d["curves.png"];
        CurvePlot.Save(path, history);
        var img = new Segmentation.Data.ImageReader().ReadImage(path, 3);
        Assert.Equal((800, 300), (img.Width, img.Height));
        int Count(byte r, byte g, byte b, int x0, int x1)
        {
            int n = 0;
            for (int y = 0; y < img.Height; y++)
                for (int x = x0; x < x1; x++)
                {
                    int i = (y * img.Width + x) * 3;
                    if (img.Pixels[i] == r && img.Pixels[i + 1] == g && img.Pixels[i + 2] == b) n++;
                }
            return n;
        }
        Assert.True(Count(31, 119, 180, 0, 400) > 100);   // train loss, left panel
        Assert.True(Count(255, 127, 14, 0, 400) > 100);   // validation loss, left panel
        Assert.True(Count(44, 160, 44, 400, 800) > 100);  // mean IoU, right panel
        Assert.Equal(0, Count(44, 160, 44, 0, 400));
        if (Environment.GetEnvironmentVariable("SEGMENTATION_KEEP_PLOT") is { } keep) File.Copy(path, keep, true);
    }
}
