using System.Runtime.InteropServices;

namespace Segmentation;

/// <summary>
/// Whether a path is a regular file, asked of the file system before anything opens it: opening a FIFO waits for a
/// writer forever, and a device (a symlink to <c>/dev/zero</c>, say) reads without end. Uses the .NET runtime's own
/// <c>stat</c> shim (libSystem.Native, shipped with every .NET), which follows symbolic links and reports the file type
/// in the same bits on every Unix; on Windows every existing file counts as regular.
/// </summary>
internal static class RegularFile
{
    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Stat", SetLastError = true,
        CharSet = CharSet.Ansi, BestFitMapping = false)]
    private static extern int Stat(string path, IntPtr status);

    private const int TypeMask = 0xF000, Fifo = 0x1000, CharacterDevice = 0x2000, Directory = 0x4000,
        BlockDevice = 0x6000, Regular = 0x8000, Socket = 0xC000;

    /// <summary>Null when <paramref name="path"/> is a regular file (or a link to one); otherwise what it is, in words
    /// ("a FIFO (named pipe)", "a character device", ...), for the caller's error.</summary>
    public static string? Problem(string path)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
            return File.Exists(path) ? null : "missing";
        // The shim's status record starts with two 32-bit fields: flags, then the mode.
        var status = Marshal.AllocHGlobal(512);
        try
        {
            if (Stat(path, status) != 0) return "missing";
            return (Marshal.ReadInt32(status, 4) & TypeMask) switch
            {
                Regular => null,
                Fifo => "a FIFO (named pipe), which would wait for a writer forever",
                CharacterDevice => "a character device (such as /dev/zero), which reads without end",
                BlockDevice => "a block device",
                Directory => "a folder",
                Socket => "a socket",
                var other => $"a special file (type 0x{other:x})",
            };
        }
        finally { Marshal.FreeHGlobal(status); }
    }

    /// <summary>
    /// The one rule for every file the library reads whole (configs, records, plans, caches, checkpoints): a regular
    /// file, checked before it is opened (a FIFO would wait forever, <c>/dev/zero</c> would read until memory ran out),
    /// of at most <paramref name="maxBytes"/>. A missing file is a <see cref="FileNotFoundException"/>; anything else
    /// an <see cref="InvalidDataException"/> naming the file, what it is and the limit.
    /// </summary>
    public static byte[] ReadAllBytes(string path, long maxBytes, string what)
    {
        switch (Problem(path))
        {
            case null: break;
            case "missing": throw new FileNotFoundException($"{path}: no such file ({what}).", path);
            case var problem: throw new InvalidDataException($"{path}: {problem}, not a {what}; refused without "
                + "opening it.");
        }
        long length = new FileInfo(path).Length;
        if (length > maxBytes)
            throw new InvalidDataException($"{path}: {length:N0} bytes, over the limit of {maxBytes:N0} for a {what}.");
        return File.ReadAllBytes(path);
    }

    /// <summary><see cref="ReadAllBytes"/> as UTF-8 text.</summary>
    public static string ReadAllText(string path, long maxBytes, string what) =>
        new StreamReader(new MemoryStream(ReadAllBytes(path, maxBytes, what)), detectEncodingFromByteOrderMarks: true)
            .ReadToEnd();
}
