using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Heads;

namespace Segmentation.Models;

/// <summary>The library's own parts: one line each in the registry (<see cref="ModelRegistry"/>).</summary>
internal static class BuiltinParts
{
    /// <summary>Registers them (the registry does this once, on first use).</summary>
    public static void Register()
    {
        ModelRegistry.AddEncoder<UNetEncoderOptions>("unet", (c, o) => new UNetEncoder(c.InChannels, o),
            "The U-Net paper's contracting path: double 3x3 convolutions, doubling channels at each 2x2 max-pool.");
        var torchvision = new PretrainedSource("FILE.pth | FILE.safetensors",
            "a torchvision ResNet state dict (fc.* left out; an RGB first convolution is fitted to the input "
                + "channels)");
        ModelRegistry.AddEncoder<ResNetEncoderOptions>("resnet18",
            (c, _) => new ResNetEncoder("resnet18", c.InChannels),
            "torchvision's ResNet-18 (basic blocks 2-2-2-2).", torchvision);
        ModelRegistry.AddEncoder<ResNetEncoderOptions>("resnet34",
            (c, _) => new ResNetEncoder("resnet34", c.InChannels),
            "torchvision's ResNet-34 (basic blocks 3-4-6-3).", torchvision);
        ModelRegistry.AddEncoder<ResNetEncoderOptions>("resnet50",
            (c, _) => new ResNetEncoder("resnet50", c.InChannels),
            "torchvision's ResNet-50 (bottleneck blocks 3-4-6-3).", torchvision);
        ModelRegistry.AddEncoder<ResNetEncoderOptions>(ResNetEncoder.MlNet,
            (c, _) => new ResNetEncoder(ResNetEncoder.MlNet, c.InChannels),
            "ML.NET's ImageNet-trained ResNet-18 layout (basic blocks 2-2-2-3, torchvision's names).",
            new PretrainedSource("builtin",
                $"{MlNetResNet18.Package} {MlNetResNet18.Version}'s ResNet18.onnx, from the NuGet cache"));
        ModelRegistry.AddDecoder<UNetDecoderOptions>("unet", (c, o) => new UNetDecoder(c.Encoder.Stages, o),
            "The U-Net paper's expanding path: up-convolution (or bilinear + 1x1), skip concatenation, double 3x3 "
                + "convolutions.");
        ModelRegistry.AddDecoder<SmpUNetDecoderOptions>("smp-unet", (c, o) => new SmpUNetDecoder(c.Encoder.Stages,
            c.Encoder.InChannels, o),
            "segmentation_models.pytorch's U-Net decoder: nearest upsampling, skip concatenation, two 3x3 "
                + "convolutions per block.");
        ModelRegistry.AddHead<ConvHeadOptions>("conv", (c, o) => new ConvHead(c.InChannels, c.Classes, o, smp: false),
            "A convolution to class logits (1x1 by default, the U-Net paper's), keys head.*.");
        ModelRegistry.AddHead<SmpConvHeadOptions>("smp-conv",
            (c, o) => new ConvHead(c.InChannels, c.Classes, new ConvHeadOptions { Kernel = o.Kernel }, smp: true),
            "segmentation_models.pytorch's segmentation head: a convolution (3x3 there), keys segmentation_head.0.*.");
        RegisterSegformer();
        FpnDecoder.Register();
        ConvNeXt.Register();
        Swin.Register();
        RegisterMask2Former();
        ModelRegistry.AddArchitecture("unet",
            "encoder -> decoder(features) -> head, logits at the input's size; the U-Net paper's parts for the unet "
                + "encoder, smp's Unet parts for the others.",
            encoder => new ModelPart(encoder == "unet" ? "unet" : "smp-unet"),
            encoder => new ModelPart(encoder == "unet" ? "conv" : "smp-conv"));
    }

    /// <summary>Mask2Former's parts: the pixel decoder, the transformer decoder and its heads, the architecture (its
    /// recipe is in Training), and their ops.</summary>
    private static void RegisterMask2Former()
    {
        DeformableOps.Register();
        MaskedAttentionOps.Register();
        ModelRegistry.AddDecoder<Mask2FormerPixelDecoderOptions>(Mask2FormerPixelDecoder.Name,
            (c, o) => new Mask2FormerPixelDecoder(c.Encoder.Stages, o),
            "Mask2Former's pixel decoder (transformers' keys): multi-scale deformable attention over the encoder's "
                + "three deepest maps, an FPN step to stride 4; the mask features, then the three refined maps.");
        ModelRegistry.AddHead<Mask2FormerHeadOptions>("mask2former", (c, o) => new Mask2FormerHead(c.DecoderMaps,
            c.Classes, o),
            "Mask2Former's transformer decoder (transformers' keys): 100 queries, masked attention to the pixel "
                + "decoder's levels, per-query class and mask logits and the semantic scores per pixel.",
            new[] { OutputKind.PixelClassLogits, OutputKind.QueryClassLogits, OutputKind.QueryMaskLogits });
        ModelRegistry.AddArchitecture("mask2former",
            "Mask2Former: any encoder (the paper's Swin or ResNet-50), the multi-scale deformable pixel decoder, the "
                + "masked-attention transformer decoder; trained with its matched set loss.",
            _ => new ModelPart(Mask2FormerPixelDecoder.Name), _ => new ModelPart("mask2former"));
    }

    /// <summary>SegFormer's parts: the Mix Transformers, the all-MLP decode head, the resizing head, the architecture
    /// with its recipe.</summary>
    private static void RegisterSegformer()
    {
        var mit = new PretrainedSource("FOLDER | FILE.pth | FILE.safetensors",
            "an ImageNet-trained Mix Transformer of the same variant: a Hugging Face folder (nvidia/mit-b*) or the "
                + "original mit_b*.pth; the encoder of a whole SegFormer too (its head left out)");
        foreach (var variant in MixTransformer.Variants)
            ModelRegistry.AddEncoder<MixTransformerOptions>(variant, "segformer",
                (c, o) => new MixTransformer(variant, c.InChannels, o),
                $"SegFormer's Mix Transformer {variant[4..].ToUpperInvariant()} (Hugging Face's keys, "
                    + $"segformer.encoder.*).", mit);
        ModelRegistry.AddDecoder<SegformerDecoderOptions>("segformer-mlp",
            (c, o) => new SegformerDecoder(c.Encoder.Stages, c.Classes, o),
            "SegFormer's all-MLP decode head with its classifier (Hugging Face's keys, decode_head.*); logits at the "
                + "first stage's stride.");
        ModelRegistry.AddHead<ResizeHeadOptions>("resize", (_, _) => new ResizeHead(),
            "The decoder's logits resized bilinearly to the input (no parameters).");
        ModelRegistry.AddArchitecture("segformer",
            "SegFormer: a Mix Transformer (or any encoder), the all-MLP decode head (256 wide for B0 and B1, 768 "
                + "beyond), "
                + "logits resized to the input.",
            encoder => ModelPart.Of("segformer-mlp", new SegformerDecoderOptions
            {
                HiddenSize = encoder.StartsWith("mit-b", StringComparison.Ordinal) ? MixTransformer.Variant(encoder)
                    .DecoderHidden : 256,
            }),
            _ => new ModelPart("resize"));
    }
}
