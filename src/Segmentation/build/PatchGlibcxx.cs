// MSBuild task (compiled by RoslynCodeTaskFactory at build time; no external tool needed).
//
// TorchSharp 0.107.0's libLibTorchSharp.so was linked by GCC 15 and asks for GLIBCXX_3.4.32, which Debian 12 and
// Ubuntu 22.04 do not have (their libstdc++ stops at 3.4.30), so the shim fails to load there. The only symbol under
// that version is _ZSt21ios_base_library_initv, a link-time marker that GCC >= 13 emits and that no relocation uses.
//
// This task marks such version needs VER_FLG_WEAK in the ELF's .gnu.version_r section: the dynamic loader then
// accepts a libstdc++ that lacks the version. It only touches a version need whose every symbol is a known marker,
// so a library that really needs newer libstdc++ functions is left as it is. It is idempotent and works on a copy
// in the build output (the file is rewritten through a temporary file, which also breaks any hard link into the
// NuGet cache).
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class PatchGlibcxxVersionNeeds : Task
{
    private const uint ShtDynsym = 11;
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const uint ShtGnuVersym = 0x6fffffff;
    private const ushort VerFlgWeak = 0x2;
    private static readonly HashSet<string> MarkerSymbols = new HashSet<string> { "_ZSt21ios_base_library_initv" };

    [Required]
    public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();

    public override bool Execute()
    {
        foreach (var item in Files)
        {
            var path = item.GetMetadata("FullPath");
            if (!File.Exists(path)) continue;
            try
            {
                var bytes = File.ReadAllBytes(path);
                var patched = Patch(bytes);
                if (patched.Count == 0) continue;
                var tmp = path + ".patching";
                File.WriteAllBytes(tmp, bytes);
                File.Delete(path);
                File.Move(tmp, path);
                Log.LogMessage(MessageImportance.Normal, "Segmentation: marked {0} weak in {1}",
                    string.Join(", ", patched), path);
            }
            catch (Exception e) when (e is IOException || e is InvalidDataException || e is ArgumentException
                || e is UnauthorizedAccessException)
            {
                Log.LogWarning("Segmentation: could not patch {0}: {1}", path, e.Message);
            }
        }
        return !Log.HasLoggedErrors;
    }

    private static List<string> Patch(byte[] b)
    {
        var result = new List<string>();
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F') return result;
        if (b[4] != 2 || b[5] != 1) return result; // ELF64, little-endian only.

        ulong shoff = U64(b, 0x28);
        int shentsize = U16(b, 0x3A), shnum = U16(b, 0x3C);
        if (shentsize < 64 || shoff == 0 || shoff + (ulong)(shnum * shentsize) > (ulong)b.Length)
            throw new InvalidDataException("section headers lie outside the file");

        int verneed = -1, dynsym = -1, versym = -1;
        for (int i = 0; i < shnum; i++)
        {
            uint type = U32(b, (int)shoff + i * shentsize + 4);
            if (type == ShtGnuVerneed) verneed = i;
            else if (type == ShtDynsym) dynsym = i;
            else if (type == ShtGnuVersym) versym = i;
        }
        if (verneed < 0 || dynsym < 0 || versym < 0) return result;

        int Sh(int index) => (int)shoff + index * shentsize;
        int strtab = (int)U64(b, Sh((int)U32(b, Sh(verneed) + 40)) + 24); // sh_link -> .dynstr offset

        var symbolsByVersion = SymbolsByVersion(b, Sh(dynsym), Sh((int)U32(b, Sh(dynsym) + 40)), Sh(versym));

        int vn = (int)U64(b, Sh(verneed) + 24);
        int count = (int)U32(b, Sh(verneed) + 44); // sh_info: number of entries
        for (int n = 0; n < count; n++)
        {
            int vnCnt = U16(b, vn + 2);
            int aux = vn + (int)U32(b, vn + 8);
            for (int a = 0; a < vnCnt; a++)
            {
                ushort flags = U16(b, aux + 4);
                int other = U16(b, aux + 6);
                string name = Str(b, strtab + (int)U32(b, aux + 8));
                if (name.StartsWith("GLIBCXX_", StringComparison.Ordinal) && (flags & VerFlgWeak) == 0
                    && symbolsByVersion.TryGetValue(other, out var syms) && syms.TrueForAll(MarkerSymbols.Contains))
                {
                    b[aux + 4] = (byte)((flags | VerFlgWeak) & 0xff);
                    b[aux + 5] = (byte)((flags | VerFlgWeak) >> 8);
                    result.Add(name);
                }
                aux += (int)U32(b, aux + 12);
            }
            uint next = U32(b, vn + 12);
            if (next == 0) break;
            vn += (int)next;
        }
        return result;
    }

    /// <summary>Names of the dynamic symbols for each version index (from .dynsym, its string table and
    /// .gnu.version).</summary>
    private static Dictionary<int, List<string>> SymbolsByVersion(byte[] b, int dynsymHeader, int dynstrHeader,
        int versymHeader)
    {
        var symbolsByVersion = new Dictionary<int, List<string>>();
        int dynOff = (int)U64(b, dynsymHeader + 24), dynSize = (int)U64(b, dynsymHeader + 32);
        int dynStr = (int)U64(b, dynstrHeader + 24);
        int verOff = (int)U64(b, versymHeader + 24);
        for (int s = 0; s < dynSize / 24; s++)
        {
            int idx = U16(b, verOff + 2 * s) & 0x7fff;
            if (!symbolsByVersion.TryGetValue(idx, out var list)) symbolsByVersion[idx] = list = new List<string>();
            list.Add(Str(b, dynStr + (int)U32(b, dynOff + 24 * s)));
        }
        return symbolsByVersion;
    }

    private static ushort U16(byte[] b, int o) => (ushort)(b[o] | b[o + 1] << 8);
    private static uint U32(byte[] b, int o) => (uint)(b[o] | b[o + 1] << 8 | b[o + 2] << 16 | b[o + 3] << 24);
    private static ulong U64(byte[] b, int o) => U32(b, o) | (ulong)U32(b, o + 4) << 32;

    private static string Str(byte[] b, int o)
    {
        int end = o;
        while (end < b.Length && b[end] != 0) end++;
        return Encoding.ASCII.GetString(b, o, end - o);
    }
}
