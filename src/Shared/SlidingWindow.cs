namespace Segmentation.Shared;

/// <summary>
/// The tiles a sliding-window prediction runs the model on (mmsegmentation's <c>slide</c> mode): windows of the given
/// size at the stride, the last row and column moved back to end at the image's edge, so every pixel is covered and
/// every window is whole. Both predictors (TorchSharp and ONNX Runtime) average the logits where tiles overlap.
/// </summary>
internal static class SlidingWindow
{
    /// <summary>The stride when none is given: two thirds of the window, at least 1.</summary>
    public static (int Height, int Width) DefaultStride(int windowHeight, int windowWidth) =>
        (Math.Max(1, windowHeight * 2 / 3), Math.Max(1, windowWidth * 2 / 3));

    /// <summary>
    /// What is wrong with a window and stride, or null: both positive, and the stride at most the window in each
    /// direction (a longer stride leaves the rows and columns between windows unpredicted: probability 0, class 0).
    /// The one check both predictors and the CLI make before any work.
    /// </summary>
    public static string? Problem(int windowHeight, int windowWidth, int strideHeight, int strideWidth) =>
        windowHeight < 1 || windowWidth < 1 || strideHeight < 1 || strideWidth < 1
            ? $"window {windowHeight}x{windowWidth} and stride {strideHeight}x{strideWidth} must be positive"
            : strideHeight > windowHeight || strideWidth > windowWidth
            ? $"stride {strideHeight}x{strideWidth} is longer than the window {windowHeight}x{windowWidth}: the pixels "
                + "between windows would be left unpredicted; give a stride of at most the window (default: two thirds "
                + "of it)"
            : null;

    /// <summary>Top, left, height and width of each tile of an <paramref name="height"/> x <paramref name="width"/>
    /// image.</summary>
    public static IReadOnlyList<(int Top, int Left, int Height, int Width)> Tiles(int height, int width,
        int windowHeight, int windowWidth,
        int strideHeight, int strideWidth)
    {
        if (Problem(windowHeight, windowWidth, strideHeight, strideWidth) is { } problem)
            throw new ArgumentOutOfRangeException(nameof(strideHeight), problem);
        int ch = Math.Min(windowHeight, height), cw = Math.Min(windowWidth, width);
        int rows = Math.Max(height - ch + strideHeight - 1, 0) / strideHeight + 1,
            cols = Math.Max(width - cw + strideWidth - 1, 0) / strideWidth + 1;
        var tiles = new List<(int, int, int, int)>(rows * cols);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                int y2 = Math.Min(r * strideHeight + ch, height), x2 = Math.Min(c * strideWidth + cw, width);
                int y1 = Math.Max(y2 - ch, 0), x1 = Math.Max(x2 - cw, 0);
                tiles.Add((y1, x1, y2 - y1, x2 - x1));
            }
        return tiles;
    }
}
