using System.Globalization;
using System.Text.Json;
using Google.Protobuf;
using Onnx;
using Segmentation.Checkpoints;
using Segmentation.Models;
using Segmentation.Data;
using Segmentation.Shared;

namespace Segmentation.Inference;

/// <summary>
/// Writes a checkpoint's model as an ONNX file (opset 17), which TorchSharp cannot do: the model's modules write their
/// own eval-mode computation as it runs (<c>SegmentationModel.ToOnnxGraph</c>), so the graph is the model, not a second
/// description of it.
/// Input <c>images</c>: float32 N x C x H x W, normalised as in training, any batch, height and width the model takes
/// (odd sizes too: the pad that aligns each upsampled map with its skip is computed from the shapes at run time).
/// Output <c>logits</c>: float32 N x classes x H x W. The metadata carries what a predictor needs besides: classes,
/// their names and colours, the normalisation, the resize and the ignore label.
/// </summary>
public static class OnnxExport
{
    /// <summary>The operator set the graph uses.</summary>
    public const int Opset = 17;

    /// <summary>The graph's input name.</summary>
    public const string Input = "images";

    /// <summary>The graph's output name.</summary>
    public const string Output = "logits";

    /// <summary>Writes <paramref name="checkpoint"/>'s model to <paramref name="path"/> (atomically).</summary>
    public static void Write(Checkpoint checkpoint, string path)
    {
        var model = Build(checkpoint);
        AtomicFile.Write(path, stream => model.WriteTo(stream));
    }

    /// <summary>The ONNX model of <paramref name="checkpoint"/>.</summary>
    public static ModelProto Build(Checkpoint checkpoint)
    {
        using var net = checkpoint.CreateModel();
        var graph = net.ToOnnxGraph(Input, out var outputs);
        graph.Name = "segmentation_" + checkpoint.Model.Architecture;
        // the input is shaped as an output per pixel is: batch, its channels, height, width
        graph.Input.Add(Value(new ModelOutput(Input, 4, OutputKind.PixelRegression), checkpoint.Model.InChannels));
        foreach (var name in outputs)
        {
            var declared = net.Outputs.FirstOrDefault(o => o.Name == name)
                ?? throw new InvalidOperationException($"The model gave an undeclared output '{name}'.");
            graph.Output.Add(Value(declared, declared.Kind == OutputKind.PixelClassLogits ? checkpoint.Model.Classes
                : null));
        }
        var model = new ModelProto
        {
            IrVersion = 8, ProducerName = "Segmentation", Graph = graph,
            ProducerVersion = typeof(OnnxExport).Assembly.GetName().Version?.ToString() ?? "",
            DocString = $"{checkpoint.Model.Summary}; input ((pixel / 255 - offset) / scale - mean) / std per channel, "
                + "offset and scale per image as normalization_scheme says",
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        foreach (var (key, value) in Metadata(checkpoint,
            net.MinimumInputSize)) model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        model.MetadataProps.Add(new StringStringEntryProto { Key = OnnxMetadataKeys.Outputs, Value = OutputsJson(
            net.Outputs) });
        return model;
    }

    /// <summary>What a predictor needs besides the graph, as the model's metadata.</summary>
    public static IEnumerable<(string Key, string Value)> Metadata(Checkpoint c, int minimumInputSize)
    {
        var p = c.Preprocessing;
        var task = Tasks.TaskRegistry.For(c.Dataset, c.Model);
        // the model's classes: a mask classifier of instance data predicts them without the per-pixel boundary
        int classes = task.DecodesQueries ? task.ModelClasses(c.Dataset) : c.Dataset.Classes;
        yield return (OnnxMetadataKeys.Classes, classes.ToString(CultureInfo.InvariantCulture));
        yield return (OnnxMetadataKeys.ClassNames, JsonSerializer.Serialize(c.Dataset.ClassNames.Take(classes)));
        yield return (OnnxMetadataKeys.ClassColors,
            JsonSerializer.Serialize(c.Dataset.ClassColors.Take(classes).Select(x => x.ToString())));
        yield return (OnnxMetadataKeys.InChannels, c.Model.InChannels.ToString(CultureInfo.InvariantCulture));
        yield return (OnnxMetadataKeys.NormalizationMean, JsonSerializer.Serialize(p.Normalization.Mean));
        yield return (OnnxMetadataKeys.NormalizationStd, JsonSerializer.Serialize(p.Normalization.Std));
        yield return (OnnxMetadataKeys.NormalizationScheme, IntensityLevels.Format(p.Normalization.SchemeName,
            p.Normalization.LowPercentile, p.Normalization.HighPercentile));
        yield return (OnnxMetadataKeys.ImageBits, p.Normalization.ImageBits.ToString(CultureInfo.InvariantCulture));
        yield return (OnnxMetadataKeys.Resize, p.Size?.ToString() ?? "");
        yield return (OnnxMetadataKeys.IgnoreIndex, c.Dataset.IgnoreIndex.ToString(CultureInfo.InvariantCulture));
        yield return (OnnxMetadataKeys.MinimumInputSize, minimumInputSize.ToString(CultureInfo.InvariantCulture));
        foreach (var entry in task.OnnxMetadata()) yield return entry; // the task's own
    }

    /// <summary>The outputs as the metadata lists them (<see cref="OnnxMetadataKeys.Outputs"/>).</summary>
    public static string OutputsJson(IReadOnlyList<ModelOutput> outputs) => JsonSerializer.Serialize(outputs.Select(o =>
        new { name = o.Name, rank = o.Rank, kind = ModelOutput.KindName(o.Kind), description = o.Description }));

    /// <summary>
    /// A graph output of the declared rank: the batch first; for outputs per pixel at the input's size, the channels
    /// (the classes where known) then <c>height</c> and <c>width</c>, the input's; any other dimension has a name of
    /// its own (<c>aux_dim2</c>), since it need not equal another output's.
    /// </summary>
    private static ValueInfoProto Value(ModelOutput output, long? channels)
    {
        var shape = new TensorShapeProto();
        static TensorShapeProto.Types.Dimension Named(string name) => new() { DimParam = name };
        bool perPixel = output.Kind is OutputKind.PixelClassLogits or OutputKind.PixelRegression && output.Rank == 4;
        shape.Dim.Add(Named("batch"));
        for (int i = 1; i < output.Rank; i++)
            shape.Dim.Add(i == 1 && channels is { } c ? new TensorShapeProto.Types.Dimension { DimValue = c }
                : perPixel && i == 2 ? Named("height") : perPixel && i == 3 ? Named("width")
                : Named($"{output.Name}_{(i == 1 && perPixel ? "channels" : "dim" + i)}"));
        return new ValueInfoProto
        {
            Name = output.Name,
            Type = new TypeProto { TensorType =
                new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
        };
    }
}
