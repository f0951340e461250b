namespace Segmentation.Training;

/// <summary>
/// A run folder owned by one process: an exclusive advisory lock (<c>flock</c>, which .NET takes for
/// <see cref="FileShare.None"/>) on the folder's <c>.lock</c> file, held while the run writes. The kernel releases it
/// when the process ends, however it ends, so a killed run never blocks its folder. Another process is refused with
/// who holds it (<c>.owner</c>: process, machine, since when). Within one process the lock is counted: the tool and
/// the trainer it drives hold it together.
/// </summary>
internal sealed class RunLock : IDisposable
{
    private static readonly Dictionary<string, (FileStream Stream, int Count, bool Created, bool LockCreated)> Held =
        new();
    private readonly string directory;
    private bool disposed;

    private RunLock(string directory) => this.directory = directory;

    /// <summary>The lock file.</summary>
    public static string LockFile(string directory) => Path.Combine(directory, ".lock");

    /// <summary>Who holds the lock, in words.</summary>
    public static string OwnerFile(string directory) => Path.Combine(directory, ".owner");

    /// <summary>
    /// Takes the folder for this process (creating the folder if need be); a <see cref="SegmentationException"/> naming
    /// the holder when another process has it.
    /// </summary>
    public static RunLock Acquire(string directory)
    {
        directory = Path.GetFullPath(directory);
        lock (Held)
        {
            if (Held.TryGetValue(directory, out var held))
            {
                Held[directory] = held with { Count = held.Count + 1 };
                return new RunLock(directory);
            }
            bool created = !Directory.Exists(directory);
            Directory.CreateDirectory(directory);
            bool lockCreated = !File.Exists(LockFile(directory));
            FileStream stream;
            try
            {
                stream = new FileStream(LockFile(directory), FileMode.OpenOrCreate, FileAccess.ReadWrite,
                    FileShare.None);
            }
            catch (IOException)
            {
                string owner = "another process";
                try { owner = File.ReadAllText(OwnerFile(directory)).Trim(); }
                catch (IOException) { } // the holder has not written it yet
                throw new SegmentationException($"{directory}: the run folder is in use by {owner}; one process at "
                    + $"a time trains in a run folder. Wait for it to end (or stop it), or give another --out.");
            }
            File.WriteAllText(OwnerFile(directory), $"process {Environment.ProcessId} on {Environment.MachineName} "
                + $"since {DateTime.Now:yyyy-MM-dd HH:mm:ss}");
            Held[directory] = (stream, 1, created, lockCreated);
            return new RunLock(directory);
        }
    }

    /// <summary>Releases this hold; the last one releases the lock. A folder this process created that holds nothing
    /// but the lock's files is removed, so that a start that failed leaves nothing behind.</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        lock (Held)
        {
            var held = Held[directory];
            if (held.Count > 1)
            {
                Held[directory] = held with { Count = held.Count - 1 };
                return;
            }
            Held.Remove(directory);
            TryDelete(OwnerFile(directory));
            bool empty = held.Created && Directory.EnumerateFileSystemEntries(directory)
                .All(f => f == LockFile(directory));
            // a start that was refused leaves nothing in a folder the user had: the lock file goes unless a run is
            // there
            if (empty || held.LockCreated && !new RunRecorder(directory).HoldsRun) TryDelete(LockFile(directory));
            held.Stream.Dispose();
            if (empty)
                try { Directory.Delete(directory); }
                catch (IOException) { } // something appeared meanwhile: leave it
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
