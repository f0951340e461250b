namespace Segmentation;

/// <summary>
/// An error in the user's input (a file, a value, an option) that the user can act on. The message names the file,
/// the value and what was expected; tools print it as one line.
/// </summary>
public class SegmentationException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SegmentationException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>A data set, image or mask problem: a bad file, an unknown label, a size mismatch, an empty set.</summary>
public class DataException : SegmentationException
{
    /// <summary>The file at fault, when there is one.</summary>
    public string? FilePath { get; }

    /// <summary>Creates the exception.</summary>
    public DataException(string message, string? filePath = null, Exception? inner = null) : base(message, inner)
        => FilePath = filePath;
}

/// <summary>An option or argument outside what is allowed.</summary>
public class OptionsException : SegmentationException
{
    /// <summary>Creates the exception.</summary>
    public OptionsException(string message) : base(message) { }
}

/// <summary>A checkpoint file that is missing, truncated, of another format or inconsistent.</summary>
public class CheckpointException : SegmentationException
{
    /// <summary>Creates the exception.</summary>
    public CheckpointException(string message, Exception? inner = null) : base(message, inner) { }
}
