using System.Collections;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// State dicts (name to tensor) read from files and loaded into modules with errors that say what did not fit:
/// TorchSharp's own format, PyTorch's <c>torch.save(state_dict)</c> (<c>.pth</c>, <c>.pt</c>; read as data by
/// TorchSharp.PyBridge's unpickler, which builds only tensors and plain containers) and <c>.safetensors</c>.
/// </summary>
internal static class StateDicts
{
    /// <summary>Reads a state dict in TorchSharp's format (what <c>Module.save</c> writes).</summary>
    public static Dictionary<string, Tensor> ReadTorchSharp(byte[] bytes)
    {
        using var reader = new BinaryReader(new MemoryStream(bytes));
        long count = DecodeCount(reader);
        var result = new Dictionary<string, Tensor>((int)Math.Min(count, 1 << 20));
        for (long i = 0; i < count; i++)
        {
            var key = reader.ReadString();
            result[key] = TensorExtensionMethods.Load(reader);
        }
        return result;
    }

    /// <summary>The entry count TorchSharp writes first (unsigned LEB128).</summary>
    private static long DecodeCount(BinaryReader reader)
    {
        long result = 0;
        for (int shift = 0; shift < 63; shift += 7)
        {
            byte b = reader.ReadByte();
            result |= (long)(b & 0x7f) << shift;
            if ((b & 0x80) == 0) return result;
        }
        throw new InvalidDataException("A state dict's entry count is malformed.");
    }

    /// <summary>
    /// Reads a PyTorch (<c>.pth</c>, <c>.pt</c>, <c>.bin</c>) or <c>.safetensors</c> state dict; a checkpoint that
    /// wraps it (<c>{"state_dict": ...}</c> or <c>{"model": ...}</c>) is unwrapped. The file's structure is checked
    /// before it is read and its tensors after (<see cref="WeightFiles"/>: sizes within the limits, safetensors offsets
    /// that tile the data, no NaN or infinity unless <paramref name="allowNonFinite"/>, which reports them through
    /// <paramref name="warnings"/>). Problems are a <see cref="SegmentationException"/> naming the file.
    /// </summary>
    public static Dictionary<string, Tensor> ReadFile(string path, bool allowNonFinite = false,
        IProgress<string>? warnings = null)
    {
        var result = ReadUnchecked(path);
        WeightFiles.CheckFinite(result, path, allowNonFinite, warnings);
        return result;
    }

    private static Dictionary<string, Tensor> ReadUnchecked(string path)
    {
        if (RegularFile.Problem(path) is { } problem)
            throw new SegmentationException(problem == "missing" ? $"{path}: no such weights file."
                : $"{path}: {problem}, not a weights file; refused without opening it.");
        bool safetensors = path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase);
        if (safetensors) WeightFiles.CheckSafetensors(path);
        else WeightFiles.CheckPyTorchFile(path);
        try
        {
            if (safetensors)
                return Safetensors.LoadStateDict(path);
            var table = PyTorchUnpickler.UnpickleStateDict(path);
            foreach (var wrapper in new[] { "state_dict", "model" })
                if (table[wrapper] is Hashtable inner) table = inner;
            var result = new Dictionary<string, Tensor>();
            foreach (DictionaryEntry e in table)
            {
                if (e.Key is string k && e.Value is Tensor t) result[k] = t;
                else throw new SegmentationException($"{path}: entry '{e.Key}' holds {Describe(e.Value)}, not a "
                    + $"tensor; a state dict holds only tensors (read as data: nothing in the file was run).");
            }
            if (result.Count == 0)
                throw new SegmentationException($"{path}: holds no tensors by name (expected a state dict saved with "
                    + $"torch.save(model.state_dict(), ...)).");
            return result;
        }
        catch (Exception e) when (e is not SegmentationException && e is not OutOfMemoryException)
        {
            throw new SegmentationException($"{path}: cannot read it as a PyTorch state dict (.pth) or .safetensors "
                + $"file: {(e is EndOfStreamException ? "a tensor's data is shorter than its shape (the file is cut "
                    + "short or damaged)" : e.Message)}.", e);
        }
    }

    /// <summary>What a pickled value is, in Python's words (never a .NET type name).</summary>
    private static string Describe(object? value) => value switch
    {
        null => "None",
        string text => $"the text '{(text.Length > 40 ? text[..40] + "..." : text)}'",
        bool or int or long or double or float or System.Numerics.BigInteger => $"the number {value}",
        IDictionary => "a dictionary that is not a state dict",
        IList => "a list",
        // the unpickler's stand-in for a class it would not build: its module and name
        _ when value.GetType().GetField("module")?.GetValue(value) is string module
            && value.GetType().GetField("name")?.GetValue(value) is string name
            => $"the Python object {module}.{name}",
        _ => "a Python object that is not a tensor",
    };

    /// <summary>
    /// Copies <paramref name="source"/> into <paramref name="module"/> by name (float tensors are converted to the
    /// parameter's type). Every key must exist on both sides with the same shape, except keys <paramref name="ignore"/>
    /// accepts; otherwise nothing is copied and the error lists the first differences.
    /// </summary>
    public static void Load(nn.Module module, IReadOnlyDictionary<string, Tensor> source, string what, Func<string,
        bool>? ignore = null)
    {
        var target = module.state_dict();
        bool Used(string k) => ignore is null || !ignore(k);
        var missing = target.Keys.Where(k => !source.ContainsKey(k) && Used(k)).ToList();
        var unexpected = source.Keys.Where(k => !target.ContainsKey(k) && Used(k)).ToList();
        var misshapen = source.Where(kv => target.TryGetValue(kv.Key, out var t)
            && !t.shape.SequenceEqual(kv.Value.shape))
            .Select(kv
                => $"{kv.Key} [{string.Join(", ", kv.Value.shape)}] for [{string.Join(", ", target[kv.Key].shape)}]")
                .ToList();
        if (missing.Count + unexpected.Count + misshapen.Count > 0)
        {
            static string List(string label, List<string> keys) => keys.Count == 0 ? ""
                : $" {keys.Count} {label}: {string.Join(", ", keys.Take(5))}{(keys.Count > 5 ? ", ..." : "")}.";
            var differences = List("missing", missing) + List("unexpected", unexpected)
                + List("of another shape", misshapen);
            throw new SegmentationException($"{what} does not fit the model:{differences}");
        }
        using var grad = no_grad();
        foreach (var (key, value) in source)
        {
            if (!target.TryGetValue(key, out var t)) continue;
            t.copy_(value.to(t.dtype, t.device));
        }
    }
}
