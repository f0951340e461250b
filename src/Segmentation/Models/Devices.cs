using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>Turns a device name into a TorchSharp device. Nothing else in the library assumes a device.</summary>
internal static class Devices
{
    /// <summary>
    /// <c>auto</c> (CUDA when available, else CPU), <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.
    /// Asking for CUDA where it is not available is an <see cref="OptionsException"/>.
    /// </summary>
    public static Device Resolve(string? name)
    {
        var n = (name ?? "auto").Trim().ToLowerInvariant();
        if (n == "auto") return cuda.is_available() ? CUDA : CPU;
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new OptionsException($"Device '{name}' was asked for, but CUDA is not available (this build or "
                    + $"machine has no CUDA backend); use 'cpu' or 'auto'.");
            if (n == "cuda") return CUDA;
            if (!int.TryParse(n.AsSpan(5), out var index) || index < 0 || index >= cuda.device_count())
                throw new OptionsException($"Device '{name}': the machine has {cuda.device_count()} CUDA device(s), "
                    + $"numbered 0 to {cuda.device_count() - 1}.");
            return new Device(TorchSharp.DeviceType.CUDA, index);
        }
        throw new OptionsException($"Device '{name}' is not one of: auto, cpu, cuda, cuda:N.");
    }
}
