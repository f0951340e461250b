using Segmentation.Models;
using Segmentation.Models.Layers;

namespace Segmentation.Tests.Models;

/// <summary>The kernel checks' verdicts kept on disk: a second process on the machine checks nothing again.</summary>
public class KernelVerdictTests
{
    [Fact]
    public void A_second_process_reads_the_verdicts_from_disk_and_routes_the_same()
    {
        using var d = new TempDir();
        Environment.SetEnvironmentVariable("SEGMENTATION_KERNEL_CACHE", d.Path);
        try
        {
            KernelVerdicts.Forget();
            ConvolutionCheck.Forget();
            LayerCheck.Forget();
            var description = new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 3, Seed = 1 };
            var shape = new long[] { 2, 3, 64, 64 };
            string Routes(SegmentationModel m) => string.Join(",", m.named_modules().Select(x => x.module switch
            {
                Layer l => $"{x.name}:{l.Route}", Attention a => $"{x.name}:a{a.Route}", _ => null,
            }).Where(x => x is not null));

            using var first = new SegmentationModel(description);
            int convolutions = ConvolutionCheck.Measurements, layers = LayerCheck.Measurements;
            first.CheckLayers(shape, training: true);
            Assert.True(ConvolutionCheck.Measurements > convolutions && LayerCheck.Measurements > layers, "the first process measures");
            var file = Assert.Single(Directory.GetFiles(d.Path, "kernel-checks-*.json"));
            Assert.Contains("\"Convolutions\"", File.ReadAllText(file));

            // A new process: nothing in memory, the file on disk.
            ConvolutionCheck.Forget();
            LayerCheck.Forget();
            KernelVerdicts.Forget();
            convolutions = ConvolutionCheck.Measurements;
            layers = LayerCheck.Measurements;
            using var second = new SegmentationModel(description);
            second.CheckLayers(shape, training: true);
            Assert.Equal(convolutions, ConvolutionCheck.Measurements); // not one kernel run again
            Assert.Equal(layers, LayerCheck.Measurements);
            Assert.Equal(Routes(first), Routes(second));

            // A damaged file is ignored, and the checks run again.
            File.WriteAllText(file, "{ not json");
            ConvolutionCheck.Forget();
            LayerCheck.Forget();
            KernelVerdicts.Forget();
            using var third = new SegmentationModel(description);
            third.CheckLayers(shape, training: true);
            Assert.True(ConvolutionCheck.Measurements > convolutions);
        }
        finally
        {
            Environment.SetEnvironmentVariable("SEGMENTATION_KERNEL_CACHE", "off");
            KernelVerdicts.Forget();
        }
    }
}
