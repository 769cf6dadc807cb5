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
    /// <summary>Output bytes seen so far, to estimate output when a stream ends without usage.</summary>
    public long OutputChars { get; set; }
    /// <summary>True once the provider's final usage arrived (message_delta, the usage chunk, or a whole response).</summary>
    public bool UsageFinal { get; set; }
    /// <summary>Content deltas passed through; each carries at least one token (estimates a stream cut before its final usage).</summary>
    public int Deltas { get; set; }
    /// <summary>Tool calls the model made in this response.</summary>
    public int ToolCalls { get; set; }
    /// <summary>When set, the assistant's text is collected here (up to <see cref="MaxText"/> characters), for run done-conditions.</summary>
    public System.Text.StringBuilder? Text { get; set; }
    public const int MaxText = 16 * 1024;

    public void AppendText(string? s)
    {
        if (Text is null || s is null || Text.Length >= MaxText) return;
        Text.Append(s.AsSpan(0, Math.Min(s.Length, MaxText - Text.Length)));
    }
}
