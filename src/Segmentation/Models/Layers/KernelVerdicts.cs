using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// The kernel checks' verdicts on disk, so that a second process on the same machine does not check again: one file
/// per machine and build, <c>kernel-checks-FINGERPRINT.json</c> in <c>$XDG_CACHE_HOME/segmentation</c> (or
/// <c>~/.cache/segmentation</c>), where the fingerprint hashes the CPU's model and flags, libtorch's and TorchSharp's
/// versions, ATen's CPU capability, oneDNN's instruction set and this build of the library (its module id, so a
/// changed check never reads an old verdict). Each verdict keeps its own key (shapes, type, route, threads, device).
/// Only CPU verdicts are kept: the CPU is what the fingerprint names. <c>SEGMENTATION_KERNEL_CACHE=off</c> turns it
/// off, <c>SEGMENTATION_KERNEL_CACHE=DIR</c> puts it elsewhere. A damaged file is ignored (and replaced).
/// </summary>
internal static class KernelVerdicts
{
    private static readonly object Gate = new();
    private static Store? store;
    private static string? loadedFrom;
    private static bool dirty;

    private static readonly JsonSerializerOptions Json = new()
    {
        Converters = { new JsonStringEnumConverter() },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private sealed record ConvolutionVerdict(ConvolutionShape Shape, ConvolutionRoute Route, int Threads,
        RouteResult Result);

    private sealed class Store
    {
        public string Machine { get; set; } = "";
        public List<ConvolutionVerdict> Convolutions { get; set; } = new();
        public Dictionary<string, double> Layers { get; set; } = new();
    }

    /// <summary>The file verdicts are kept in, or null when that is turned off.</summary>
    public static string? FilePath
    {
        get
        {
            var setting = Environment.GetEnvironmentVariable("SEGMENTATION_KERNEL_CACHE");
            if (setting is "off" or "0" or "false") return null;
            var dir = setting is { Length: > 0 } ? setting
                : Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
                    : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"),
                    "segmentation");
            return Path.Combine(dir, $"kernel-checks-{Fingerprint()}.json");
        }
    }

    /// <summary>What makes a verdict valid here: this CPU, these native libraries, this build.</summary>
    public static string Machine() => machine ??= string.Join("|", NativeRuntime.CpuModel(), CpuFlags(),
        __version__ ?? "?", typeof(TorchSharp.torch).Assembly.GetName().Version, NativeRuntime.CpuCapability() ?? "?",
        NativeRuntime.OneDnnIsa(), typeof(KernelVerdicts).Assembly.ManifestModule.ModuleVersionId);

    private static string? machine;

    private static string Fingerprint() => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(Machine())))[..16]
        .ToLowerInvariant();

    private static string CpuFlags() => OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo")
        ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal)) ?? ""
        : "";

    /// <summary>The stored verdict for a convolution route, if any.</summary>
    public static RouteResult? Convolution(ConvolutionShape shape, ConvolutionRoute route, int threads, Device device)
    {
        if (device.type != DeviceType.CPU) return null;
        lock (Gate)
            return Load()?.Convolutions.FirstOrDefault(v => v.Shape == shape && v.Route == route
                && v.Threads == threads)?.Result;
    }

    /// <summary>Keeps a convolution verdict (written by <see cref="Flush"/>).</summary>
    public static void Keep(ConvolutionShape shape, ConvolutionRoute route, int threads, Device device,
        RouteResult result)
    {
        if (device.type != DeviceType.CPU) return;
        lock (Gate)
        {
            if (Load() is not { } s) return;
            s.Convolutions.Add(new ConvolutionVerdict(shape, route, threads, result));
            dirty = true;
        }
    }

    /// <summary>The stored error of another layer's check (its key names everything it depends on), if any.</summary>
    public static double? Layer(string key, Device device)
    {
        if (device.type != DeviceType.CPU) return null;
        lock (Gate) return Load()?.Layers.TryGetValue(key, out var error) == true ? error : null;
    }

    /// <summary>Keeps another layer's verdict (written by <see cref="Flush"/>).</summary>
    public static void Keep(string key, Device device, double error)
    {
        if (device.type != DeviceType.CPU) return;
        lock (Gate)
        {
            if (Load() is not { } s) return;
            s.Layers[key] = error;
            dirty = true;
        }
    }

    /// <summary>Writes what was kept, merged with what other processes wrote meanwhile, atomically. A cache: a write
    /// that fails (a read-only home) is given up silently, and the checks simply run again next time.</summary>
    public static void Flush()
    {
        lock (Gate)
        {
            if (!dirty || store is null || loadedFrom is null) return;
            var merged = Read(loadedFrom) ?? new Store { Machine = store.Machine };
            foreach (var v in store.Convolutions.Where(v => !merged.Convolutions.Any(m => m.Shape == v.Shape
                && m.Route == v.Route && m.Threads == v.Threads))) merged.Convolutions.Add(v);
            foreach (var (k, e) in store.Layers) merged.Layers[k] = e;
            try
            {
                AtomicFile.WriteAllText(loadedFrom, JsonSerializer.Serialize(merged, Json));
                store = merged;
                dirty = false;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { dirty = false; }
        }
    }

    /// <summary>Forgets what was loaded (tests: as a new process would start).</summary>
    internal static void Forget()
    {
        lock (Gate) { store = null; loadedFrom = null; dirty = false; }
    }

    private static Store? Load()
    {
        var path = FilePath;
        if (path is null) return null;
        if (store is not null && loadedFrom == path) return store;
        store = Read(path) ?? new Store { Machine = Machine() };
        loadedFrom = path;
        return store;
    }

    private static Store? Read(string path)
    {
        try
        {
            if (!File.Exists(path)) return null;
            // a cache that is a FIFO or a device is no cache: measured again, never waited on
            var s = JsonSerializer.Deserialize<Store>(RegularFile.ReadAllText(path, Limits.ConfigFileBytes,
                "kernel-check cache"), Json);
            if (s is null || s.Machine != Machine()) return null; // a hash collision is not a match
            // an entry that contradicts itself (an edited tolerance, errors that are no errors) is measured again
            s.Convolutions.RemoveAll(v => !Consistent(v));
            foreach (var key in s.Layers.Where(kv => !(kv.Value >= 0 && double.IsFinite(kv.Value))).Select(kv =>
                kv.Key).ToList())
                s.Layers.Remove(key);
            return s;
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException
            or NotSupportedException or InvalidDataException)
        {
            return null;
        }
    }

    /// <summary>A cached verdict is trusted only as this build would have written it: today's tolerance, the route it
    /// is filed under, and errors that are finite and not negative where the outputs were finite.</summary>
    private static bool Consistent(ConvolutionVerdict v) => v.Result is { } r && r.Route == v.Route && v.Threads >= 1
        && r.Tolerance == ConvolutionCheck.Tolerance
        && (!r.Finite || new[] { r.OutputError, r.InputGradientError, r.WeightGradientError }
            .All(e => e >= 0 && double.IsFinite(e)));
}
