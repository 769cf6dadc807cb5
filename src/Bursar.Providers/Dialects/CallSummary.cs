using Bursar.Core.Usage;

namespace Bursar.Providers.Dialects;

/// <summary>What metering learned from one upstream response, streamed or not.</summary>
public sealed class CallSummary
{
    public TokenUsage Usage { get; set; }
    /// <summary>False when the response ended before it reported usage (e.g. a dropped stream).</summary>
    public bool UsageSeen { get; set; }
    public string? Model { get; set; }
    public string? ResponseId { get; set; }
    public string? FinishReason { get; set; }
    public string? ErrorType { get; set; }
    public string? ErrorMessage { get; set; }
    /// <summary><see cref="TimeProvider.GetTimestamp"/> when the first content token passed through.</summary>
    public long? FirstTokenTimestamp { get; set; }
    /// <summary>Output text seen so far (characters), to estimate output when a stream ends without usage.</summary>
    public long OutputChars { get; set; }
}
