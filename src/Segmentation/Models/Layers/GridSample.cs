using Segmentation.Models.Export;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Layers;

/// <summary>
/// Bilinear sampling of an N x C x H x W map at the points of an N x Ho x Wo x 2 grid (x then y, -1 to 1 from the
/// first pixel's left edge to the last one's right: <c>align_corners=False</c>), zeros outside the map: PyTorch's
/// <c>grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)</c>, what multi-scale deformable
/// attention (Mask2Former's pixel decoder) samples with. The result is N x C x Ho x Wo. It computes in float32 whatever
/// the model's precision (a bfloat16 coordinate is half a pixel off on a 256-pixel map), is checked against float64
/// (the explicit route gathers the four neighbours), and exports as ONNX <c>GridSample</c> (opset 16).
/// </summary>
public sealed class GridSample : nn.Module<Tensor, Tensor, Tensor>, IMultiInputLeaf
{
    /// <summary>Creates the layer (it has no parameters).</summary>
    public GridSample() : base(nameof(GridSample)) { }

    /// <summary>0: libtorch's kernel; 1: the four neighbours gathered and weighted.</summary>
    internal int Route { get; set; }

    /// <summary>Called with the map, the grid and the output after each pass while set.</summary>
    internal Action<nn.Module, Tensor[], Tensor>? Observer { get; set; }

    /// <summary>Sampling stays float32 whatever the model's precision (see the class summary).</summary>
    ScalarType IMultiInputLeaf.ComputeType { get => ScalarType.Float32; set { } }
    int IMultiInputLeaf.Route { get => Route; set => Route = value; }
    Action<nn.Module, Tensor[], Tensor>? IMultiInputLeaf.Observer { get => Observer; set => Observer = value; }

    /// <inheritdoc />
    public override Tensor forward(Tensor input, Tensor grid)
    {
        if (input.dim() != 4 || grid.dim() != 4 || grid.shape[3] != 2 || grid.shape[0] != input.shape[0])
            throw new ArgumentException($"GridSample takes an N x C x H x W map and an N x Ho x Wo x 2 grid; got "
                + $"{string.Join("x", input.shape)} and {string.Join("x", grid.shape)}.");
        Tensor output;
        if (input.dtype == ScalarType.Float32 && grid.dtype == ScalarType.Float32) output = Apply(Route, input, grid);
        else
        {
            using var scope = NewDisposeScope();
            output = Apply(Route, input.to(ScalarType.Float32), grid.to(ScalarType.Float32)).to(input.dtype)
                .MoveToOuterDisposeScope();
        }
        Observer?.Invoke(this, new[] { input, grid }, output);
        OnnxTrace.Current?.GridSample(this, input, grid, output);
        return output;
    }

    private static Tensor Apply(int route, Tensor input, Tensor grid) => route == 0
        ? F.grid_sample(input, grid, GridSampleMode.Bilinear, GridSamplePaddingMode.Zeros, align_corners: false)
        : Gathered(input, grid);

    /// <summary>The explicit route: pixel coordinates ((g + 1) size - 1) / 2, the four neighbours' values (zero
    /// outside the map) weighted by their bilinear shares.</summary>
    internal static Tensor Gathered(Tensor input, Tensor grid)
    {
        using var scope = NewDisposeScope();
        long n = input.shape[0], c = input.shape[1], h = input.shape[2], w = input.shape[3];
        long ho = grid.shape[1], wo = grid.shape[2];
        var x = ((grid[.., .., .., 0] + 1) * w - 1) / 2;
        var y = ((grid[.., .., .., 1] + 1) * h - 1) / 2;
        var x0 = x.floor().detach();
        var y0 = y.floor().detach();
        var flat = input.reshape(n, c, h * w);
        Tensor result = zeros(new[] { n, c, ho * wo }, input.dtype, input.device);
        foreach (var (dx, dy) in new[] { (0, 0), (1, 0), (0, 1), (1, 1) })
        {
            var xi = x0 + dx;
            var yi = y0 + dy;
            var share = (dx == 0 ? 1 - (x - x0) : x - x0) * (dy == 0 ? 1 - (y - y0) : y - y0);
            var inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1);
            var index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).to(ScalarType.Int64).reshape(n, 1, ho * wo)
                .expand(n, c, ho * wo);
            var weight = (share * inside.to(share.dtype)).reshape(n, 1, ho * wo);
            result = result + flat.gather(2, index) * weight;
        }
        return result.reshape(n, c, ho, wo).MoveToOuterDisposeScope();
    }

    LayerSummary IMultiInputLeaf.Summarise(string path, Tensor[] inputs, Tensor output) =>
        new(path, "GridSample", output.shape[1..], 0, 4 * output.numel() / output.shape[0]);

    IReadOnlyList<Tensor> ICheckedComputation.Parameters => Array.Empty<Tensor>();

    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> parameters,
        bool training) => Apply(route, inputs[0], inputs[1]);
}
