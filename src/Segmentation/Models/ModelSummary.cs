namespace Segmentation.Models;

/// <summary>One layer of a <see cref="ModelSummary"/>.</summary>
/// <param name="Name">State-dict prefix of the layer.</param>
/// <param name="Kind">Layer type.</param>
/// <param name="OutputShape">C x H x W of the layer's output for one image.</param>
/// <param name="Parameters">Trainable parameters.</param>
/// <param name="MultiplyAccumulates">Multiply-accumulates for one image.</param>
public sealed record LayerSummary(string Name, string Kind, long[] OutputShape, long Parameters, long MultiplyAccumulates);

/// <summary>Layer table, parameter count and multiply-accumulates of a U-Net for an input size, computed from its options.</summary>
public sealed record ModelSummary(UNetOptions Options, int Height, int Width, IReadOnlyList<LayerSummary> Layers)
{
    /// <summary>Total trainable parameters (equals <see cref="UNet.ParameterCount"/>).</summary>
    public long Parameters => Layers.Sum(l => l.Parameters);

    /// <summary>Total multiply-accumulates per image (convolutions only; normalisation, pooling and activations are not counted).</summary>
    public long MultiplyAccumulates => Layers.Sum(l => l.MultiplyAccumulates);

    /// <summary>Computes the table for an input of <paramref name="height"/> x <paramref name="width"/>.</summary>
    public static ModelSummary For(UNetOptions o, int height, int width)
    {
        o.Validate();
        if (height < o.MinimumInputSize || width < o.MinimumInputSize)
            throw new OptionsException($"Input {width}x{height} is too small for depth {o.Depth}: the minimum is {o.MinimumInputSize}x{o.MinimumInputSize}.");
        var rows = new List<LayerSummary>();
        bool bias = o.Normalization == NormalizationKind.None;
        long NormParams(long c) => o.Normalization == NormalizationKind.None ? 0 : 2 * c;

        void Conv(string name, long cin, long cout, int k, long h, long w, bool withBias, string kind = "Conv2d")
            => rows.Add(new LayerSummary(name, kind, new[] { cout, h, w }, cin * cout * k * k + (withBias ? cout : 0), cin * cout * k * k * h * w));
        void Double(string prefix, long cin, long cout, long h, long w)
        {
            Conv($"{prefix}.block.conv1", cin, cout, 3, h, w, bias);
            if (NormParams(cout) > 0) rows.Add(new LayerSummary($"{prefix}.block.norm1", o.Normalization + "Norm", new[] { cout, h, w }, NormParams(cout), 0));
            Conv($"{prefix}.block.conv2", cout, cout, 3, h, w, bias);
            if (NormParams(cout) > 0) rows.Add(new LayerSummary($"{prefix}.block.norm2", o.Normalization + "Norm", new[] { cout, h, w }, NormParams(cout), 0));
        }

        var ch = Enumerable.Range(0, o.Depth + 1).Select(i => (long)o.BaseChannels << i).ToArray();
        var sizes = new List<(long H, long W)> { (height, width) };
        for (int i = 1; i <= o.Depth; i++) sizes.Add((sizes[i - 1].H / 2, sizes[i - 1].W / 2));

        Double("stem", o.InChannels, ch[0], height, width);
        for (int i = 1; i <= o.Depth; i++)
        {
            rows.Add(new LayerSummary($"encoder.{i - 1}.pool", "MaxPool2d", new[] { ch[i - 1], sizes[i].H, sizes[i].W }, 0, 0));
            Double($"encoder.{i - 1}.conv", ch[i - 1], ch[i], sizes[i].H, sizes[i].W);
        }
        for (int j = 0; j < o.Depth; j++)
        {
            int level = o.Depth - 1 - j;
            var (h, w) = sizes[level];
            long up = ch[level + 1] / 2;
            var (uh, uw) = (sizes[level + 1].H * 2, sizes[level + 1].W * 2);
            if (o.Upsampling == UpsamplingMode.Transposed)
                rows.Add(new LayerSummary($"decoder.{j}.up", "ConvTranspose2d", new[] { up, uh, uw }, ch[level + 1] * up * 4 + up, ch[level + 1] * up * 4 * sizes[level + 1].H * sizes[level + 1].W));
            else
                Conv($"decoder.{j}.up.reduce", ch[level + 1], up, 1, uh, uw, true);
            Double($"decoder.{j}.conv", ch[level] + up, ch[level], h, w);
        }
        Conv("head", ch[0], o.Classes, 1, height, width, true);
        return new ModelSummary(o, height, width, rows);
    }
}
