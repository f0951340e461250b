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
}
