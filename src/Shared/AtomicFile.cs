namespace Segmentation;

/// <summary>
/// Writes a file so that a crash, a kill or a full disk leaves the previous file (or none), never half of one: the
/// content goes to a temporary file beside it (<c>.NAME.GUID.tmp</c>), is flushed to disk, and is renamed over the
/// target. Run folders sweep such temporary files left by interrupted writes. Shared (src/Shared) by the library and
/// the ONNX Runtime package, whose predicted masks are written the same way.
/// </summary>
internal static class AtomicFile
{
    /// <summary>Writes <paramref name="path"/> through <paramref name="write"/>; <paramref name="wrap"/> lets tests
    /// interpose on the stream.</summary>
    public static void Write(string path, Action<Stream> write, Func<Stream, Stream>? wrap = null)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var file = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                var stream = wrap?.Invoke(file) ?? file;
                write(stream);
                stream.Flush();
                file.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(tmp); } catch (IOException) { }
            // The user's file is the news, not the hidden temporary one the error names.
            throw new IOException($"{full}: cannot write it ({e.Message.Replace(tmp, full, StringComparison.Ordinal)})"
                + ".", e);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Writes <paramref name="text"/> as UTF-8.</summary>
    public static void WriteAllText(string path, string text)
        => Write(path, s => s.Write(System.Text.Encoding.UTF8.GetBytes(text)));
}
