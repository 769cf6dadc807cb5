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

    private WireApi _api;
    private string _model = "";
    private bool _stream, _includeUsage, _deterministic;
    private long _estimatedInputTokens, _inputTokenBound;
    private long? _maxTokens;
    private int _choices = 1;
    private string _cacheControl = "";

    /// <summary>The API the call speaks (chat unless the face says otherwise).</summary>
    public WireApi Api { get => _api; init => _api = value; }
    /// <summary>The model the caller asked for.</summary>
    public required string Model { get => _model; init => _model = value; }
    public bool Stream { get => _stream; init => _stream = value; }
    /// <summary>The caller asked for the usage chunk of a stream (OpenAI <c>stream_options.include_usage</c>).</summary>
    public bool IncludeUsage { get => _includeUsage; init => _includeUsage = value; }
    /// <summary>The answer is a function of the request (temperature 0, no tools that change the world): safe to cache.</summary>
    public bool Deterministic { get => _deterministic; init => _deterministic = value; }
    /// <summary>The one-pass input estimate (rate limits count it; reports show it when usage never arrives).</summary>
    public long EstimatedInputTokens { get => _estimatedInputTokens; init => _estimatedInputTokens = value; }
    /// <summary>Input tokens the request cannot exceed (budgets and run caps reserve it).</summary>
    public long InputTokenBound { get => _inputTokenBound; init => _inputTokenBound = value; }
    /// <summary>The caller's output limit (null: none set).</summary>
    public long? MaxTokens { get => _maxTokens; init => _maxTokens = value; }
    /// <summary>Completions generated and billed (<c>n</c>, <c>best_of</c>).</summary>
    public int Choices { get => _choices; init => _choices = value; }
    /// <summary>The caller's cache control: <c>on</c> opts a non-deterministic call into the exact cache, <c>off</c> bypasses both caches.</summary>
    public string CacheControl { get => _cacheControl; init => _cacheControl = value; }

    /// <summary>
    /// Makes this object the view of a new request read the same way (a face that reuses its calls, see
    /// <see cref="LeverCall.Restart"/>); the body is parsed again on first use, by the same parse function.
    /// </summary>
    public void Restart(string model, bool stream, bool includeUsage, bool deterministic, long estimatedInputTokens, long inputTokenBound, long? maxTokens, int choices, string cacheControl, WireApi api = WireApi.Chat)
    {
        (_api, _model, _stream, _includeUsage, _deterministic) = (api, model, stream, includeUsage, deterministic);
        (_estimatedInputTokens, _inputTokenBound, _maxTokens, _choices, _cacheControl) = (estimatedInputTokens, inputTokenBound, maxTokens, choices, cacheControl);
        _body = null;
    }

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
