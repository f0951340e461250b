using Segmentation.Models;
using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = Segmentation.Models.Layers.Linear;
using LayerNorm = Segmentation.Models.Layers.LayerNorm;
using GroupNorm = Segmentation.Models.Layers.GroupNorm;
using BatchNorm = Segmentation.Models.Layers.BatchNorm;

namespace Segmentation.Tests.Models;

/// <summary>
/// A leaf that scales each channel, whose routes can be made wrong on purpose below float64, as oneDNN's float32 and
/// bfloat16 kernels are wrong where its float64 path is right: route 0 stands for libtorch's kernel, route 1 for the
/// computation spelled out. The check must see a wrong route and move off it.
/// </summary>
internal sealed class SkewedScale : Layer, ICheckedComputation
{
#pragma warning disable IDE1006 // state-dict name
    private Parameter weight;
#pragma warning restore IDE1006
    private readonly double[] skew;

    /// <summary>A scale of <paramref name="channels"/> channels; route r multiplies its result by 1 + skew[r] below float64.</summary>
    public SkewedScale(long channels, double skew0, double skew1) : base(nameof(SkewedScale))
    {
        weight = new Parameter(rand(channels) + 0.5);
        skew = new[] { skew0, skew1 };
        RegisterComponents();
    }

    protected override Tensor Compute(Tensor input) => Scale(Route, input, weight);

    private Tensor Scale(int route, Tensor x, Tensor w) => x * w.view(1, -1, 1, 1) * (x.dtype == ScalarType.Float64 ? 1 : 1 + skew[route]);

    internal override string ExportOnnx(OnnxGraph g, string input, string path) => throw new NotSupportedException("a test layer");

    internal override ICheckedComputation Checkable => this;
    IReadOnlyList<Tensor> ICheckedComputation.Parameters => new Tensor[] { weight };
    string ICheckedComputation.Hyperparameters => $"skew={skew[0]},{skew[1]}";
    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> p, bool training) =>
        Scale(route, inputs[0], p[0]);
}

/// <summary>The float64 check of the leaves other than convolutions (<see cref="LayerCheck"/>).</summary>
public class LayerCheckTests
{
    private static nn.Module<Tensor, Tensor> Net(params (string, nn.Module<Tensor, Tensor>)[] layers) => nn.Sequential(layers);

    [Fact]
    public void Right_kernels_pass_at_float32_rounding_forward_and_backward()
    {
        // Tokens N x L x C for the linear and layer norm; maps for the norms over channels.
        using var tokens = Net(("norm", new LayerNorm(24)), ("proj", new Linear(24, 40)));
        var results = LayerCheck.Configure(tokens, new long[] { 2, 50, 24 }, training: true, CPU);
        using var maps = Net(("group", new GroupNorm(4, 12)), ("batch", new BatchNorm(12)));
        results = results.Concat(LayerCheck.Configure(maps, new long[] { 2, 12, 9, 7 }, training: true, CPU)).ToList();
        Assert.Equal(new[] { "LayerNorm", "Linear", "GroupNorm", "BatchNorm" }, results.Select(r => r.Kind).ToArray());
        foreach (var r in results)
        {
            Assert.Equal(0, r.Route);
            // Right, and measurably compared: float32 against float64 is off by rounding, not by nothing.
            Assert.InRange(r.Errors[0], 1e-12, 1e-5);
        }
    }

    [Fact]
    public void A_kernel_off_by_a_percent_is_left_for_the_route_that_is_right()
    {
        var layer = new SkewedScale(5, skew0: 0.01, skew1: 0);
        using var net = Net(("scale", layer));
        var r = LayerCheck.Configure(net, new long[] { 2, 5, 6, 6 }, training: true, CPU).Single();
        Assert.Equal(1, r.Route);
        Assert.Equal(1, layer.Route);
        Assert.InRange(r.Errors[0], 0.009, 0.011); // the skew, seen as the relative error it is
        Assert.True(r.Errors[1] <= r.Tolerance);
    }

    [Fact]
    public void A_layer_no_route_computes_right_is_refused_by_name()
    {
        using var net = Net(("scale", new SkewedScale(7, skew0: 0.05, skew1: 0.02)));
        var e = Assert.Throws<SegmentationException>(() => LayerCheck.Configure(net, new long[] { 1, 7, 4, 4 }, training: false, CPU));
        Assert.Contains("scale (SkewedScale", e.Message);
    }

    [Fact]
    public void In_bfloat16_a_linear_layer_is_checked_in_bfloat16_and_the_model_gives_float32()
    {
        using var net = Net(("proj", new Linear(16, 8) { ComputeType = ScalarType.BFloat16 }));
        var r = LayerCheck.Configure(net, new long[] { 2, 30, 16 }, training: true, CPU).Single();
        Assert.Equal(ConvolutionCheck.BFloat16Tolerance, r.Tolerance);
        Assert.True(r.Errors[0] <= r.Tolerance, $"{r.Errors[0]:E2}");
        using var y = net.forward(randn(2, 30, 16));
        Assert.Equal(ScalarType.BFloat16, y.dtype); // the leaf computes in its type; the model casts its outputs back
    }
}
