using System.Text.Json.Serialization;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;

namespace Segmentation.Models;

/// <summary>
/// What a model is, as data: an architecture, an encoder, a decoder and a head, each a registered name with its own
/// options (<see cref="ModelPart"/>), and the input channels and classes. The checkpoint and <c>run.json</c> store it;
/// the trainer, predictor, exporters and the CLI build the model from it (<see cref="SegmentationModel.Create"/>) and
/// never name a concrete model class. A decoder or head left out is the architecture's default for the encoder.
/// </summary>
/// <example><code>
/// var unet = new ModelDescription { Classes = 2 };                                   // the paper's U-Net, 31,037,698
/// parameters
/// var r34 = ModelDescription.For("resnet34", classes: 12);                            // smp's Unet on a ResNet-34
/// var small = unet with { Encoder = ModelPart.Of("unet", new UNetEncoderOptions { BaseChannels = 16 }) };
/// </code></example>
public sealed record ModelDescription
{
    /// <summary>The architecture: how encoder, decoder and head are wired, and their defaults.</summary>
    public string Architecture { get; init; } = "unet";

    /// <summary>Input channels: 1 for gray, 3 for RGB, or more.</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Output classes (channels of the logits).</summary>
    public int Classes { get; init; } = 2;

    /// <summary>The encoder (default: the U-Net paper's contracting path).</summary>
    public ModelPart Encoder { get; init; } = new("unet");

    /// <summary>The decoder; null: the architecture's default for <see cref="Encoder"/>.</summary>
    public ModelPart? Decoder { get; init; }

    /// <summary>The head; null: the architecture's default for <see cref="Encoder"/>.</summary>
    public ModelPart? Head { get; init; }

    /// <summary>
    /// Seed of the initial weights: the same seed gives the same weights, whatever ran before in the process (the
    /// global generator is left as it was). Null draws them from the global generator.
    /// </summary>
    public int? Seed { get; init; } = 0;

    /// <summary>
    /// The U-Net paper's model (Ronneberger et al. 2015): with the defaults the canonical U-Net, 31,037,698 parameters
    /// for 3 inputs and 2 classes. <paramref name="norm"/> goes to encoder and decoder alike.
    /// </summary>
    public static ModelDescription UNet(int classes = 2, int inChannels = 3, int baseChannels = 64, int depth = 4,
        UpsamplingMode upsampling = UpsamplingMode.Transposed, NormLayer norm = NormLayer.Batch, double dropout = 0,
            int? seed = 0) => new()
    {
        InChannels = inChannels, Classes = classes, Seed = seed,
        Encoder = ModelPart.Of("unet", new UNetEncoderOptions { BaseChannels = baseChannels, Depth = depth,
            Norm = norm, Dropout = dropout }),
        Decoder = ModelPart.Of("unet", new UNetDecoderOptions { Upsampling = upsampling, Norm = norm }),
    };

    /// <summary>The default model around a registered encoder: the architecture its registry entry names (unet,
    /// segformer).</summary>
    public static ModelDescription For(string encoder, int classes = 2, int inChannels = 3) => new()
    {
        Architecture = ModelRegistry.Find(PartKind.Encoder, encoder).DefaultArchitecture,
        Encoder = new ModelPart(encoder), Classes = classes, InChannels = inChannels,
    };

    /// <summary>Every part named, with every option written out (what a built model reports and a checkpoint
    /// stores).</summary>
    public ModelDescription Resolve() => ModelRegistry.Resolve(this);

    /// <summary>Throws <see cref="OptionsException"/> naming the first unknown part or bad value.</summary>
    public void Validate() => ModelRegistry.Resolve(this);

    /// <summary>One line: architecture, parts, channels and classes.</summary>
    [JsonIgnore]
    public string Summary
        => $"{Architecture}: {Encoder.Name} encoder, {Decoder?.Name ?? "default"} decoder, {Head?.Name ?? "default"} "
        + $"head, "
        + $"{InChannels} -> {Classes} classes";
}
