using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// A leaf of several inputs (<see cref="Attention"/>: queries, keys, values; <see cref="GridSample"/>: a map and a
/// grid): what <see cref="Layer"/> is for one input. The model sets its precision, <see cref="LayerCheck"/> checks it
/// against float64 and routes it, <see cref="ModelSummary"/> writes its row, and it records its own ONNX nodes.
/// </summary>
internal interface IMultiInputLeaf : ICheckedComputation
{
    /// <summary>The type it computes in (<see cref="Precision"/>; a leaf that stays float32 ignores it).</summary>
    ScalarType ComputeType { get; set; }

    /// <summary>Which way of computing it uses (0: libtorch's kernel).</summary>
    int Route { get; set; }

    /// <summary>Called with the inputs and the output after each pass while set.</summary>
    Action<nn.Module, Tensor[], Tensor>? Observer { get; set; }

    /// <summary>The summary row for one pass.</summary>
    LayerSummary Summarise(string path, Tensor[] inputs, Tensor output);
}
