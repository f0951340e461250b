using static TorchSharp.torch;

namespace Segmentation.Tests;

public class TorchRuntimeTests
{
    [Fact]
    public void Torch_initialises_and_runs_a_convolution()
    {
        using var scope = NewDisposeScope();
        var input = arange(16f).reshape(1, 1, 4, 4);
        var kernel = ones(1, 1, 3, 3);
        var output = nn.functional.conv2d(input, kernel);
        Assert.Equal(new long[] { 1, 1, 2, 2 }, output.shape);
        // Top-left 3x3 window of 0..15 laid out row by row: 0+1+2+4+5+6+8+9+10 = 45.
        Assert.Equal(45f, output[0, 0, 0, 0].item<float>());
        Assert.Equal(90f, output[0, 0, 1, 1].item<float>());
    }
}
