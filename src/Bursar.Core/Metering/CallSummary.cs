using Bursar.Core.Usage;

namespace Bursar.Core.Metering;

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

    /// <summary>An upstream answered 200 (JSON or stream): from here on the call may have been billed, so it is never metered at $0 silently.</summary>
    public bool Answered { get; set; }

    /// <summary>Nothing learned yet (a reused call).</summary>
    public void Reset()
    {
        Usage = default;
        UsageSeen = false;
        Model = ResponseId = FinishReason = ErrorType = ErrorMessage = null;
        FirstTokenTimestamp = null;
        OutputChars = 0;
        UsageFinal = false;
        Deltas = 0;
        ToolCalls = 0;
        Text = null;
        Answered = false;
        _output = null;
        OutputTextChars = 0;
    }

    public void AppendText(string? s)
    {
        if (s is null) return;
        AppendText(s.AsSpan());
    }

    /// <summary>Assistant text: kept for run done-conditions (when <see cref="Text"/> is set) and counted for the output estimate.</summary>
    public void AppendText(ReadOnlySpan<char> s)
    {
        AppendOutput(s);
        if (Text is null || Text.Length >= MaxText) return;
        Text.Append(s[..Math.Min(s.Length, MaxText - Text.Length)]);
    }

    private System.Text.StringBuilder? _output;

    /// <summary>Most output text kept to tokenize when the provider's usage never arrives; beyond it only its length is counted.</summary>
    public const int MaxOutputText = 256 * 1024;

    /// <summary>Characters of generated output (text, tool-call arguments) seen so far.</summary>
    public long OutputTextChars { get; private set; }

    /// <summary>Generated output that is not assistant text (tool-call arguments, thinking): counted for the output estimate only.</summary>
    public void AppendOutput(ReadOnlySpan<char> s)
    {
        if (s.IsEmpty) return;
        OutputTextChars += s.Length;
        if (UsageFinal && _output is null) return; // the provider's usage is known: nothing will be estimated from the text
        _output ??= new System.Text.StringBuilder();
        if (_output.Length < MaxOutputText) _output.Append(s[..Math.Min(s.Length, MaxOutputText - _output.Length)]);
    }

    /// <summary>The generated output kept so far (up to <see cref="MaxOutputText"/> characters of <see cref="OutputTextChars"/>).</summary>
    public string OutputText => _output?.ToString() ?? "";
}
