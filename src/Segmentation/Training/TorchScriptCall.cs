using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// Calls a TorchScript function so that its arguments outlive the native call. TorchSharp hands the arguments to
/// libtorch as raw handles and then no longer holds them, so a <see cref="Scalar"/> made for the call (a learning rate,
/// a clip norm) was unreachable while libtorch read it: a garbage collection on another thread (the loader's
/// allocations) could finalize it mid-call, and libtorch read freed memory ("Unknown scalar type", or a Scalar read
/// as another type). Every TorchScript call goes through here: the arguments are kept alive to the end of the call,
/// and the scalars made for it are disposed after it, not left to the finalizer.
/// </summary>
internal static class TorchScriptCall
{
    /// <summary>Invokes <paramref name="name"/> with <paramref name="arguments"/>; every <see cref="Scalar"/> among
    /// them is the call's own and is disposed after it (tensors and lists belong to the caller).</summary>
    public static void Invoke(jit.CompilationUnit unit, string name, params object[] arguments)
    {
        try { unit.invoke(name, arguments); }
        finally
        {
            foreach (var argument in arguments) (argument as Scalar)?.Dispose();
            GC.KeepAlive(arguments);
        }
    }
}
