namespace Segmentation.Onnx;

/// <summary>The few array operations prediction needs, on C x H x W float arrays (row-major, one plane per
/// channel).</summary>
internal static class Tensors
{
    /// <summary>Bilinear resize as PyTorch's <c>interpolate(mode="bilinear", align_corners=False)</c>.</summary>
    public static float[] Resize(float[] x, int c, int h, int w, int oh, int ow)
    {
        if (oh == h && ow == w) return x;
        var result = new float[c * oh * ow];
        var (y0, y1, ly) = Taps(h, oh);
        var (x0, x1, lx) = Taps(w, ow);
        for (int k = 0; k < c; k++)
        {
            int src = k * h * w, dst = k * oh * ow;
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++)
                {
                    float top = x[src + y0[i] * w + x0[j]] * (1 - lx[j]) + x[src + y0[i] * w + x1[j]] * lx[j];
                    float bottom = x[src + y1[i] * w + x0[j]] * (1 - lx[j]) + x[src + y1[i] * w + x1[j]] * lx[j];
                    result[dst + i * ow + j] = top * (1 - ly[i]) + bottom * ly[i];
                }
        }
        return result;
    }

    /// <summary>For each output index: the two source indices and the weight of the second (half-pixel centres, clamped
    /// at 0).</summary>
    private static (int[], int[], float[]) Taps(int size, int outSize)
    {
        var i0 = new int[outSize]; var i1 = new int[outSize]; var l = new float[outSize];
        float scale = (float)size / outSize;
        for (int o = 0; o < outSize; o++)
        {
            float src = Math.Max(scale * (o + 0.5f) - 0.5f, 0);
            i0[o] = Math.Min((int)src, size - 1);
            i1[o] = Math.Min(i0[o] + 1, size - 1);
            l[o] = src - i0[o];
        }
        return (i0, i1, l);
    }

    /// <summary>The class with the largest logit at each pixel (the first on ties).</summary>
    public static byte[] Argmax(float[] logits, int classes, int pixels)
    {
        var labels = new byte[pixels];
        for (int i = 0; i < pixels; i++)
        {
            int best = 0; float top = logits[i];
            for (int k = 1; k < classes; k++)
                if (logits[k * pixels + i] > top) { top = logits[k * pixels + i]; best = k; }
            labels[i] = (byte)best;
        }
        return labels;
    }

    /// <summary>The window (y, x, height, width) of each plane.</summary>
    public static float[] Crop(float[] x, int c, int h, int w, int y, int x0, int ch, int cw)
    {
        var result = new float[c * ch * cw];
        for (int k = 0; k < c; k++)
            for (int i = 0; i < ch; i++) Array.Copy(x, (k * h + y + i) * w + x0, result, (k * ch + i) * cw, cw);
        return result;
    }

    /// <summary>Pads each plane at the bottom and right to ph x pw by repeating its edge.</summary>
    public static float[] PadEdge(float[] x, int c, int h, int w, int ph, int pw)
    {
        var result = new float[c * ph * pw];
        for (int k = 0; k < c; k++)
            for (int i = 0; i < ph; i++)
                for (int j = 0; j < pw; j++) result[(k * ph + i) * pw + j] = x[(k * h + Math.Min(i, h - 1)) * w
                    + Math.Min(j, w - 1)];
        return result;
    }

    /// <summary>Adds a window's logits into the sums and counts the pixels it covers.</summary>
    public static void AddInto(float[] sum, float[] count, float[] part, int c, int h, int w, int y, int x0, int ch,
        int cw)
    {
        for (int k = 0; k < c; k++)
            for (int i = 0; i < ch; i++)
                for (int j = 0; j < cw; j++) sum[(k * h + y + i) * w + x0 + j] += part[(k * ch + i) * cw + j];
        for (int i = 0; i < ch; i++)
            for (int j = 0; j < cw; j++) count[(y + i) * w + x0 + j] += 1;
    }
}
