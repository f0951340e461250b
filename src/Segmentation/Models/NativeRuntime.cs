using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// The few switches of the native libtorch that TorchSharp does not expose, reached through the flags libc10 exports
/// (<c>FLAGS_caffe2_log_level</c>, <c>FLAGS_caffe2_cpu_allocator_do_junk_fill</c>), and facts for diagnostics.
/// Everything here degrades to doing nothing where the symbols are absent (another platform or libtorch build).
/// </summary>
internal static class NativeRuntime
{
    private const int RTLD_LAZY = 1, RTLD_NOLOAD = 4;

    /// <summary>
    /// Environment variable naming a <c>libLibTorchSharp.so</c> to load instead of the one beside TorchSharp (for
    /// instance one built against a Python install's libtorch on a GPU machine; docs/gpu.md). Its libtorch libraries
    /// are found as the system finds libraries (<c>LD_LIBRARY_PATH</c>).
    /// </summary>
    public const string ShimVariable = "SEGMENTATION_LIBTORCHSHARP";
    private static bool shimChecked;

    /// <summary>
    /// Loads the shim named by <see cref="ShimVariable"/>, if set, before anything touches TorchSharp: TorchSharp's
    /// own look-up then finds it already loaded. Runs when this assembly is first used; executables and test assemblies
    /// that may touch TorchSharp first call it themselves. A named file that does not load is an error naming it.
    /// </summary>
    public static void PreloadShim()
    {
        lock (Gate)
        {
            if (shimChecked) return;
            shimChecked = true;
            if (Environment.GetEnvironmentVariable(ShimVariable) is not { Length: > 0 } path) return;
            if (!File.Exists(path))
                throw new SegmentationException($"{ShimVariable} names {path}, which does not exist.");
            try { NativeLibrary.Load(Path.GetFullPath(path)); }
            catch (DllNotFoundException e) { throw new SegmentationException($"{ShimVariable}: {path} does not load "
                + $"({e.Message}); its libtorch libraries must be on LD_LIBRARY_PATH.", e); }
        }
    }

#pragma warning disable CA2255 // a library module initializer, on purpose: it must run before TorchSharp's first call
    [System.Runtime.CompilerServices.ModuleInitializer]
    internal static void PreloadShimOnLoad() => PreloadShim();
#pragma warning restore CA2255
    private const int LogLevelError = 2;
    private static readonly object Gate = new();
    private static bool initialized;
    private static IntPtr c10;

    /// <summary>
    /// Loads libtorch and quiets its C++ warnings (libc10's log level set to errors), unless the user chose a level
    /// with <c>TORCH_CPP_LOG_LEVEL</c>. On CPUs that NNPACK does not support, libtorch otherwise prints
    /// "Could not initialize NNPACK! Reason: Unsupported hardware." for every convolution shape it meets.
    /// </summary>
    public static void EnsureInitialized()
    {
        lock (Gate)
        {
            if (initialized) return;
            initialized = true;
            InitializeDeviceType(DeviceType.CPU);
            c10 = OpenLoaded("libc10.so");
            if (Environment.GetEnvironmentVariable("TORCH_CPP_LOG_LEVEL") is null
                && Flag("FLAGS_caffe2_log_level") is { } level)
                Marshal.WriteInt32(level, Math.Max(Marshal.ReadInt32(level), LogLevelError));
        }
    }

    /// <summary>libc10's log level (0 info, 1 warning, 2 error), or null where it cannot be read.</summary>
    public static int? LogLevel
    {
        get { EnsureInitialized(); return Flag("FLAGS_caffe2_log_level") is { } p ? Marshal.ReadInt32(p) : null; }
    }

    /// <summary>
    /// While the returned object lives, libtorch's CPU allocator fills every new block with junk, so code that reads
    /// memory it never wrote gives garbage (usually NaN) every time. Only for checks: it slows every allocation.
    /// Returns null where the flag is not exported.
    /// </summary>
    internal static IDisposable? JunkFill()
    {
        EnsureInitialized();
        if (Flag("FLAGS_caffe2_cpu_allocator_do_junk_fill") is not { } p) return null;
        byte before = Marshal.ReadByte(p);
        Marshal.WriteByte(p, 1);
        return new Restore(() => Marshal.WriteByte(p, before));
    }

    /// <summary>
    /// The vector instruction set ATen dispatches its CPU kernels to (<c>at::get_cpu_capability()</c>: DEFAULT, AVX2,
    /// AVX512, ...), or null where it cannot be read.
    /// </summary>
    public static string? CpuCapability()
    {
        EnsureInitialized();
        var torchCpu = OpenLoaded("libtorch_cpu.so");
        if (torchCpu == IntPtr.Zero || !NativeLibrary.TryGetExport(torchCpu, "_ZN2at18get_cpu_capabilityB5cxx11Ev",
            out var fn)) return null;
        // The function returns a std::string (libstdc++'s layout: data pointer, length, 16-byte buffer) through a
        // hidden pointer; it is read and deliberately not freed (a few bytes, once).
        var buffer = Marshal.AllocHGlobal(64);
        try
        {
            unsafe { ((delegate* unmanaged<IntPtr, IntPtr>)fn)(buffer); }
            var data = Marshal.ReadIntPtr(buffer);
            long length = Marshal.ReadInt64(buffer, IntPtr.Size);
            return length is > 0 and < 64 ? Marshal.PtrToStringAnsi(data, (int)length) : null;
        }
        finally { Marshal.FreeHGlobal(buffer); }
    }

    /// <summary>
    /// The widest x86 instruction set oneDNN may use in this process: <c>ONEDNN_MAX_CPU_ISA</c> when set, else what the
    /// CPU
    /// reports (avx512_core_bf16, avx512_core, avx2, sse41). Read from /proc/cpuinfo, not from oneDNN itself
    /// (libtorch does not export oneDNN's query).
    /// </summary>
    public static string OneDnnIsa()
    {
        if (Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA") is { Length: > 0 } max)
            return $"at most {max} (ONEDNN_MAX_CPU_ISA)";
        if (!OperatingSystem.IsLinux() || !File.Exists("/proc/cpuinfo")) return "unknown";
        var flags = File.ReadLines("/proc/cpuinfo")
            .FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal))?.Split(' ').ToHashSet()
                ?? new HashSet<string>();
        bool Has(params string[] f) => f.All(flags.Contains);
        if (Has("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16")) return "avx512_core_bf16";
        if (Has("avx512f", "avx512bw", "avx512vl", "avx512dq")) return "avx512_core";
        if (Has("avx2", "fma")) return "avx2";
        return Has("sse4_1") ? "sse41" : "none";
    }

    /// <summary>The CPU's model name, from /proc/cpuinfo.</summary>
    public static string CpuModel()
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/proc/cpuinfo"))
            return RuntimeInformation.ProcessArchitecture.ToString();
        var line = File.ReadLines("/proc/cpuinfo")
            .FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
        var family = File.ReadLines("/proc/cpuinfo")
            .FirstOrDefault(l => l.StartsWith("cpu family", StringComparison.Ordinal));
        var name = line?.Split(':', 2)[1].Trim() ?? "unknown";
        return family is null ? name : $"{name} (family {family.Split(':', 2)[1].Trim()})";
    }

    /// <summary>
    /// CUDA: bytes of device memory in use (total less free, as <c>cudaMemGetInfo</c> reports it: this process's
    /// context and cached blocks, and any other process's), through the CUDA runtime libtorch loaded; null where it
    /// cannot be read.
    /// </summary>
    public static long? CudaMemoryInUse()
    {
        if (!cuda.is_available()) return null;
        foreach (var name in new[] { "libcudart.so.13", "libcudart.so.12", "libcudart.so" })
        {
            var lib = OpenLoaded(name);
            if (lib == IntPtr.Zero || !NativeLibrary.TryGetExport(lib, "cudaMemGetInfo", out var fn)) continue;
            ulong free = 0, total = 0;
            int status;
            unsafe { status = ((delegate* unmanaged<ulong*, ulong*, int>)fn)(&free, &total); }
            return status == 0 ? (long)(total - free) : null;
        }
        return null;
    }

    private static IntPtr? Flag(string name) => c10 != IntPtr.Zero && NativeLibrary.TryGetExport(c10, name, out var p)
        ? p : null;

    private static IntPtr OpenLoaded(string soname)
    {
        if (!OperatingSystem.IsLinux()) return IntPtr.Zero;
        try { return dlopen(soname, RTLD_LAZY | RTLD_NOLOAD); }
        catch (Exception e) when (e is DllNotFoundException || e is EntryPointNotFoundException) { return IntPtr.Zero; }
    }

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern IntPtr dlopen(string file, int mode);

    private sealed class Restore(Action undo) : IDisposable
    {
        public void Dispose() => undo();
    }
}
