global using Xunit;

// Tests share libtorch's global random generator and both cores: run them one class at a time, so that seeded
// tests cannot draw from the generator between another test's manual_seed and its use.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Segmentation.Tests
{
    internal static class NativeShim
    {
        /// <summary>A libLibTorchSharp.so named by SEGMENTATION_LIBTORCHSHARP is loaded before any test touches TorchSharp (docs/gpu.md).</summary>
        [System.Runtime.CompilerServices.ModuleInitializer]
        internal static void Preload()
        {
            // Every test checks kernels afresh (and the tool it starts does too); KernelVerdictTests turns the disk
            // cache on in a folder of its own.
            Environment.SetEnvironmentVariable("SEGMENTATION_KERNEL_CACHE", "off");
            Segmentation.Models.NativeRuntime.PreloadShim();
        }
    }
}
