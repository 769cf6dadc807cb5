namespace Bursar.Core.Context;

/// <summary>Document compression (<c>Bursar:DocumentCompression</c>): off unless a feature here or a route's <c>DocumentCompression</c> opts in.</summary>
public sealed class DocumentCompressionOptions
{
    public const string Section = "Bursar:DocumentCompression";

    /// <summary>Features whose documents (user turns, tool results) are compressed; "*" for all. Default none.</summary>
    public List<string> Features { get; set; } = [];

    /// <summary>Documents shorter than this many characters are sent as they are. Default 1,000.</summary>
    public int MinChars { get; set; } = 1_000;

    /// <summary>A run of at least this many base64 characters becomes a stub naming its length. Default 256.</summary>
    public int Base64MinChars { get; set; } = 256;

    /// <summary>Lines among the first and last this many of two or more documents of one request that repeat are removed after their first appearance (0: off). Default 5.</summary>
    public int RepeatedEdgeLines { get; set; } = 5;

    public bool AppliesTo(string? feature) => Features.Contains("*") || (feature is not null && Features.Contains(feature, StringComparer.Ordinal));

    /// <summary>Throws naming the field at fault; run once at start.</summary>
    public void Validate()
    {
        if (MinChars < 0) throw new InvalidOperationException($"{Section}:MinChars must be 0 or more, not {MinChars}.");
        if (Base64MinChars < 32) throw new InvalidOperationException($"{Section}:Base64MinChars must be at least 32 (shorter runs are ordinary words and ids), not {Base64MinChars}.");
        if (RepeatedEdgeLines is < 0 or > 100) throw new InvalidOperationException($"{Section}:RepeatedEdgeLines must be between 0 and 100, not {RepeatedEdgeLines}.");
    }
}
