namespace Segmentation.Data;

/// <summary>Pairs a folder's images with its masks by file name; unpaired files are an error or, if asked, a
/// warning.</summary>
internal static class FilePairs
{
    /// <summary>The pairs of <paramref name="dir"/>/images and <paramref name="dir"/>/masks, matched by file name
    /// (extension aside), in name order.</summary>
    public static List<(string Image, string Mask, string Stem)> Read(string dir, DatasetOptions o,
        List<string> warnings)
    {
        if (!Directory.Exists(dir)) throw new DataException($"{dir}: data folder not found.", dir);
        string imagesDir = Path.Combine(dir, "images"), masksDir = Path.Combine(dir, "masks");
        if (!Directory.Exists(imagesDir) || !Directory.Exists(masksDir))
            throw new DataException(SegmentationDataset.HasSplitFolders(dir)
                ? $"{dir}: has train/ and val/ folders; open it with FromSplitFolders (the CLI does this by itself)."
                : $"{dir}: expected the folders images/ and masks/ (or train/ and val/, each holding images/ and "
                + $"masks/).", dir);
        var images = Index(imagesDir);
        var masks = WithoutMaskSuffixes(Index(masksDir), images);
        var noMask = images.Keys.Where(k => !masks.ContainsKey(k)).Order(StringComparer.OrdinalIgnoreCase).ToList();
        var noImage = masks.Keys.Where(k => !images.ContainsKey(k)).Order(StringComparer.OrdinalIgnoreCase).ToList();
        if (noMask.Count + noImage.Count > 0)
        {
            string List(List<string> stems, Dictionary<string, string> files) =>
                string.Join(", ", stems.Take(5).Select(s => Path.GetFileName(files[s])))
                    + (stems.Count > 5 ? $" and {stems.Count - 5} more" : "");
            var parts = new List<string>();
            if (noMask.Count > 0) parts.Add($"{noMask.Count} image(s) without a mask in {masksDir}: "
                + $"{List(noMask, images)}");
            if (noImage.Count > 0) parts.Add($"{noImage.Count} mask(s) without an image in {imagesDir}: "
                + $"{List(noImage, masks)}");
            if (!o.SkipUnpaired)
                throw new DataException($"{dir}: unpaired files: {string.Join("; ", parts)}. Pairs share a file name "
                    + $"(the extension may differ; a mask may add {string.Join(", ", MaskSuffixes)}); skip them with "
                    + $"--skip-unpaired (DatasetOptions.SkipUnpaired).", dir);
            warnings.AddRange(parts.Select(p => $"skipped {p}"));
        }
        var pairs = images.Keys.Where(masks.ContainsKey).Order(StringComparer.Ordinal)
            .Select(k => (images[k], masks[k], Path.GetFileNameWithoutExtension(images[k]))).ToList();
        if (pairs.Count == 0)
            throw new DataException($"{dir}: no image–mask pairs found (images: {images.Count}, masks: "
                + $"{masks.Count}).", dir);
        return pairs;
    }

    /// <summary>Suffixes that name a mask after its image (a.png and a_mask.png): Carvana's, ISIC's and
    /// others'.</summary>
    internal static readonly string[] MaskSuffixes = { "_mask", "-mask", "_label", "_labels", "_gt", "_segmentation",
        "_seg" };

    /// <summary>Masks keyed by their image's name: a mask whose name is an image's plus one of <see
    /// cref="MaskSuffixes"/>, and that has no mask of the image's own name, pairs with that image.</summary>
    private static Dictionary<string, string> WithoutMaskSuffixes(Dictionary<string, string> masks,
        Dictionary<string, string> images)
    {
        var result = new Dictionary<string, string>(masks, StringComparer.OrdinalIgnoreCase);
        foreach (var (stem, file) in masks)
        {
            if (images.ContainsKey(stem)) continue;
            var suffix = MaskSuffixes.FirstOrDefault(s => stem.EndsWith(s, StringComparison.OrdinalIgnoreCase)
                && images.ContainsKey(stem[..^s.Length]) && !masks.ContainsKey(stem[..^s.Length]));
            if (suffix is null) continue;
            result.Remove(stem);
            result[stem[..^suffix.Length]] = file;
        }
        return result;
    }

    /// <summary>A folder's image files by stem (case ignored); two files of one stem are an error.</summary>
    internal static Dictionary<string, string> Index(string folder)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var file in Directory.EnumerateFiles(folder))
        {
            if (!ImageFiles.Extensions.Contains(Path.GetExtension(file).ToLowerInvariant())) continue;
            var stem = Path.GetFileNameWithoutExtension(file);
            if (!result.TryAdd(stem, file))
                throw new DataException($"{folder}: two files share the name '{stem}' "
                    + $"({Path.GetFileName(result[stem])} and {Path.GetFileName(file)}); pairs are matched by name, "
                    + $"so keep one.", file);
        }
        return result;
    }
}
