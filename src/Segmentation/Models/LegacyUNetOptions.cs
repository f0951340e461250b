using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Heads;
using Segmentation.Models.Layers;

namespace Segmentation.Models;

/// <summary>
/// What checkpoints and <c>run.json</c> records written before the model description (0.3 and earlier) hold as the
/// model: the U-Net's options. Read, never written: <see cref="ToDescription"/> turns them into the description of
/// the same model, with the same state-dict keys.
/// </summary>
internal sealed record LegacyUNetOptions
{
    /// <summary>The encoders 0.3 knew, as it wrote them.</summary>
    public enum LegacyEncoder { UNet, ResNet18, ResNet34, ResNet50, MlNetResNet18 }

    public int InChannels { get; init; } = 3;
    public int Classes { get; init; } = 2;
    public int BaseChannels { get; init; } = 64;
    public int Depth { get; init; } = 4;
    public UpsamplingMode Upsampling { get; init; } = UpsamplingMode.Transposed;
    public NormLayer Norm { get; init; } = NormLayer.Batch;

    /// <summary>What files written before 0.3 call <see cref="Norm"/>.</summary>
    [JsonInclude, JsonPropertyName("Normalization")]
    private NormLayer? LegacyNormalization { init { if (value is { } v) Norm = v; } }

    public double Dropout { get; init; }
    public int? Seed { get; init; } = 0;
    public LegacyEncoder Encoder { get; init; } = LegacyEncoder.UNet;
    public int[]? DecoderChannels { get; init; }

    private static readonly JsonSerializerOptions Json = new() { Converters = { new JsonStringEnumConverter() } };

    /// <summary>Whether a stored model object is in this form (a description has an <c>Architecture</c>).</summary>
    public static bool IsLegacy(JsonNode? model) => model is JsonObject o
        && !o.ContainsKey(nameof(ModelDescription.Architecture));

    /// <summary>Reads the legacy form.</summary>
    public static LegacyUNetOptions Read(JsonNode model) => model.Deserialize<LegacyUNetOptions>(Json)
        ?? throw new JsonException("The stored model options are empty.");

    /// <summary>The description of the same model.</summary>
    public ModelDescription ToDescription()
    {
        var name = Encoder switch
        {
            LegacyEncoder.ResNet18 => "resnet18",
            LegacyEncoder.ResNet34 => "resnet34",
            LegacyEncoder.ResNet50 => "resnet50",
            LegacyEncoder.MlNetResNet18 => ResNetEncoder.MlNet,
            _ => "unet",
        };
        // The heads are the architecture's defaults for these encoders (1x1 conv; smp's 3x3 conv).
        var d = name == "unet"
            ? ModelDescription.UNet(Classes, InChannels, BaseChannels, Depth, Upsampling, Norm, Dropout, Seed)
            : ModelDescription.For(name, Classes, InChannels) with
            {
                Seed = Seed,
                Decoder = ModelPart.Of("smp-unet", new SmpUNetDecoderOptions { Channels = DecoderChannels
                    ?? new SmpUNetDecoderOptions().Channels, Norm = Norm }),
            };
        return d.Resolve();
    }
}
