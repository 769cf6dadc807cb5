using System.Text.Json;
using System.Text.Json.Nodes;

namespace Bursar.Core.Pipeline;

/// <summary>
/// The request as the stages read it: the scalars every lever needs (read once by the face: the gateway's one-pass
/// scan of the caller's bytes, the library's <c>ChatOptions</c>) and the body as a JSON DOM in the caller's wire format,
/// parsed on first use and at most once. Stages read it and never change it: what should change goes to
/// <see cref="LeverCall.Edits"/>.
/// </summary>
public sealed class CallRequest(Func<JsonObject> parse)
{
    public static CallRequest Empty { get; } = new(static () => new JsonObject()) { Model = "" };

    private JsonObject? _body;

    /// <summary>The API the call speaks (chat unless the face says otherwise).</summary>
    public WireApi Api { get; init; }
    /// <summary>The model the caller asked for.</summary>
    public required string Model { get; init; }
    public bool Stream { get; init; }
    /// <summary>The caller asked for the usage chunk of a stream (OpenAI <c>stream_options.include_usage</c>).</summary>
    public bool IncludeUsage { get; init; }
    /// <summary>The answer is a function of the request (temperature 0, no tools that change the world): safe to cache.</summary>
    public bool Deterministic { get; init; }
    /// <summary>The one-pass input estimate (rate limits count it; reports show it when usage never arrives).</summary>
    public long EstimatedInputTokens { get; init; }
    /// <summary>Input tokens the request cannot exceed (budgets and run caps reserve it).</summary>
    public long InputTokenBound { get; init; }
    /// <summary>The caller's output limit (null: none set).</summary>
    public long? MaxTokens { get; init; }
    /// <summary>Completions generated and billed (<c>n</c>, <c>best_of</c>).</summary>
    public int Choices { get; init; } = 1;
    /// <summary>The caller's cache control: <c>on</c> opts a non-deterministic call into the exact cache, <c>off</c> bypasses both caches.</summary>
    public string CacheControl { get; init; } = "";

    /// <summary>The body, parsed on first use (throws what a bad body throws: see <see cref="IsBadJson"/>).</summary>
    public JsonObject Body => _body ??= parse();

    /// <summary>The body, or false when it cannot be read as a DOM (the provider call names the fault).</summary>
    public bool TryBody(out JsonObject body)
    {
        try
        {
            body = Body;
            return true;
        }
        catch (Exception e) when (IsBadJson(e))
        {
            body = null!;
            return false;
        }
    }

    /// <summary>A new DOM from the caller's bytes: a second upstream attempt starts again from what the caller sent.</summary>
    public JsonObject Reparse() => _body = parse();

    /// <summary>What reading a caller's JSON into a DOM can throw: duplicate keys, text that is not valid UTF-16, wrong node kinds.</summary>
    public static bool IsBadJson(Exception e) => e is JsonException or InvalidOperationException or ArgumentException or FormatException or InvalidCastException;
}
