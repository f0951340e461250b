using static TorchSharp.torch;
using Segmentation.Models.Export;

namespace Segmentation.Models.Encoders;

/// <summary>One feature map an encoder hands the decoder: its channels and its stride (input size / its size).</summary>
/// <param name="Channels">Channels of the feature map.</param>
/// <param name="Stride">How many input pixels one of its pixels spans per side: 1, 2, 4, ...</param>
internal sealed record EncoderStage(int Channels, int Stride);

/// <summary>
/// The contracting half of a U-Net (the seam of segmentation_models.pytorch): it turns an image into feature maps of
/// growing stride. <see cref="nn.Module{T, TResult}.forward"/> returns the input itself first (stride 1, as smp's
/// encoders do), then one map per entry of <see cref="Stages"/>; the decoder builds itself from <see cref="Stages"/>.
/// </summary>
internal abstract class Encoder : nn.Module<Tensor, Tensor[]>
{
    /// <summary>Creates the module.</summary>
    protected Encoder(string name) : base(name) { }

    /// <summary>The feature maps after the input, in order of growing stride.</summary>
    public abstract IReadOnlyList<EncoderStage> Stages { get; }

    /// <summary>Image channels the encoder takes.</summary>
    public abstract int InChannels { get; }

    /// <summary>Adds the encoder to an ONNX graph; returns the names of the input and each feature map, as <c>forward</c> returns them.</summary>
    internal abstract string[] ExportOnnx(OnnxGraph g, string input, string path);

    /// <summary>The largest stride: inputs must be at least this large on each side.</summary>
    public int OutputStride => Stages[^1].Stride;
}

/// <summary>The encoders there are.</summary>
public enum EncoderKind
{
    /// <summary>The U-Net paper's contracting path: double 3x3 convolutions, doubling channels at each 2x2 max-pool.</summary>
    UNet,
    /// <summary>torchvision's ResNet-18 (basic blocks 2-2-2-2).</summary>
    ResNet18,
    /// <summary>torchvision's ResNet-34 (basic blocks 3-4-6-3).</summary>
    ResNet34,
    /// <summary>torchvision's ResNet-50 (bottleneck blocks 3-4-6-3).</summary>
    ResNet50,
    /// <summary>
    /// ML.NET's ImageNet-trained ResNet-18 layout (basic blocks 2-2-2-3; see <see cref="MlNetResNet18"/>): torchvision's
    /// names, one more <c>layer4</c> block than ResNet-18. Its pretrained weights ship in a NuGet package, so it is the
    /// pretrained encoder a machine without downloads can have.
    /// </summary>
    MlNetResNet18,
}
