using System.Text.Json;

namespace Bursar.Providers.Dialects;

/// <summary>
/// One pass over a request body with <see cref="Utf8JsonReader"/>: checks it is well-formed JSON and reads the top-level
/// fields the gateway needs, without building a DOM. Field shapes a provider would reject outright are reported here
/// with a message that names the field; deeper validation is the provider's.
/// </summary>
public partial struct RequestScan
{
    public string? Model;
    public bool Stream;
    public bool IncludeUsage;
    /// <summary>The caller's output limit (<c>max_tokens</c> or <c>max_completion_tokens</c>), if any.</summary>
    public long? MaxTokens;
    /// <summary>
    /// A cheap, deliberately high estimate of the input tokens: UTF-8 bytes of every string in messages, system and tools
    /// divided by <see cref="BytesPerToken"/>, plus <see cref="ImageTokens"/> per image and a few tokens per message.
    /// Used to reserve budget and count rate limits before the call; billing always uses the provider's usage.
    /// </summary>
    public long EstimatedInputTokens;
    /// <summary>
    /// An input-token count the call cannot exceed, for budget reservations: the UTF-8 bytes of every string in
    /// messages, system and tools (a byte-level BPE token covers at least one byte, and the raw JSON escapes only add
    /// bytes), inline image and document data counted as its bytes, <see cref="ImageUrlTokenBound"/> per image URL, and
    /// <see cref="MessageOverheadTokens"/> per message. The admission also caps it at the model's context window.
    /// </summary>
    public long InputTokenBound;
    /// <summary>How many completions the provider generates and bills: OpenAI <c>n</c>, or <c>best_of</c> where a server supports it. 1 otherwise.</summary>
    public int Choices;
    /// <summary>True when the request asks for greedy decoding (temperature 0 or top_k 1): the exact cache may answer it.</summary>
    public bool Deterministic;
    public ProviderError? Error;
    /// <summary>Responses: the stored response this call continues (<c>previous_response_id</c>), if any.</summary>
    public string? PreviousResponseId;
    /// <summary>Responses: <c>store</c> as sent (null: not sent, which stores).</summary>
    public bool? Store;

    /// <summary>English text runs about 4 bytes per token; 3 keeps the estimate on the safe (high) side.</summary>
    public const double BytesPerToken = 3.0;
    public const int ImageTokens = 1_600;
    /// <summary>The most tokens one image fetched by URL can cost (a large high-detail image on a patch-priced model, or a document page).</summary>
    public const int ImageUrlTokenBound = 6_400;
    /// <summary>Role and separator tokens each message adds, at most.</summary>
    public const int MessageOverheadTokens = 8;
    /// <summary>OpenAI's largest <c>n</c>.</summary>
    public const int MaxChoices = 128;

    public static RequestScan Run(ReadOnlySpan<byte> body, Dialect dialect, bool countTokens = false)
    {
        var s = new RequestScan { Choices = 1 };
        if (body.IsEmpty)
        {
            s.Error = ProviderError.BadRequest("The request body is empty; send a JSON object with 'model' and 'messages'.");
            return s;
        }
        var r = new Utf8JsonReader(body, new JsonReaderOptions { MaxDepth = 128 });
        bool sawMessages = false, sawMaxTokens = false;
        var c = new PromptCounts();
        int n = 1, bestOf = 1;
        Span<long> keys = stackalloc long[32]; // top-level keys seen, as (offset << 32 | length) into the body: no allocation per request
        var keyCount = 0;
        List<string>? manyKeys = null;
        try
        {
            if (!r.Read() || r.TokenType != JsonTokenType.StartObject)
            {
                s.Error = ProviderError.BadRequest("The request body must be a JSON object.");
                return s;
            }
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                // a key sent twice is ambiguous (providers and parsers disagree on which one wins): refuse it, naming the key
                if (SeenBefore(ref r, body, keys, ref keyCount, ref manyKeys))
                {
                    var key = r.GetString()!;
                    return Fail(ref s, key, $"The request body has the key '{Shown(key)}' more than once; send each field once.");
                }
                if (r.ValueTextEquals("model"u8))
                {
                    r.Read();
                    if (r.TokenType != JsonTokenType.String) return Fail(ref s, "model", "'model' must be a string naming the model, e.g. \"gpt-4o-mini\" or \"claude-sonnet-4-5\".");
                    s.Model = ModelNames.Read(ref r);
                }
                else if (r.ValueTextEquals("stream"u8))
                {
                    r.Read();
                    if (r.TokenType is not (JsonTokenType.True or JsonTokenType.False or JsonTokenType.Null)) return Fail(ref s, "stream", "'stream' must be true or false.");
                    s.Stream = r.TokenType == JsonTokenType.True;
                }
                else if (r.ValueTextEquals("messages"u8))
                {
                    r.Read();
                    if (r.TokenType != JsonTokenType.StartArray) return Fail(ref s, "messages", "'messages' must be an array of message objects.");
                    sawMessages = true;
                    CountPrompt(ref r, ref c);
                }
                else if (r.ValueTextEquals("system"u8) || r.ValueTextEquals("tools"u8))
                {
                    r.Read();
                    CountPrompt(ref r, ref c);
                }
                else if (r.ValueTextEquals("max_tokens"u8) || r.ValueTextEquals("max_completion_tokens"u8))
                {
                    var name = r.ValueTextEquals("max_tokens"u8) ? "max_tokens" : "max_completion_tokens";
                    r.Read();
                    if (r.TokenType == JsonTokenType.Null && dialect == Dialect.OpenAI) continue;
                    if (r.TokenType != JsonTokenType.Number || !r.TryGetInt64(out var mt) || mt < 0)
                        return Fail(ref s, name, $"'{name}' must be a non-negative integer.");
                    sawMaxTokens |= name == "max_tokens";
                    s.MaxTokens = mt;
                }
                else if (r.ValueTextEquals("n"u8) || r.ValueTextEquals("best_of"u8))
                {
                    var name = r.ValueTextEquals("n"u8) ? "n" : "best_of";
                    r.Read();
                    if (r.TokenType == JsonTokenType.Null) continue;
                    if (r.TokenType != JsonTokenType.Number || !r.TryGetInt32(out var k) || k < 1 || k > MaxChoices)
                        return Fail(ref s, name, $"'{name}' must be an integer from 1 to {MaxChoices} (the number of completions to generate).");
                    if (name == "n") n = k; else bestOf = k;
                }
                else if (r.ValueTextEquals("temperature"u8) || r.ValueTextEquals("top_k"u8))
                {
                    var isTopK = r.ValueTextEquals("top_k"u8);
                    r.Read();
                    if (r.TokenType == JsonTokenType.Number && r.TryGetDouble(out var t) && (isTopK ? t == 1 : t == 0)) s.Deterministic = true;
                    else r.Skip();
                }
                else if (r.ValueTextEquals("stream_options"u8))
                {
                    r.Read();
                    if (r.TokenType == JsonTokenType.Null) continue;
                    if (r.TokenType != JsonTokenType.StartObject) return Fail(ref s, "stream_options", "'stream_options' must be an object.");
                    var depth = r.CurrentDepth;
                    while (r.Read() && !(r.TokenType == JsonTokenType.EndObject && r.CurrentDepth == depth))
                    {
                        if (r.TokenType == JsonTokenType.PropertyName && r.CurrentDepth == depth + 1 && r.ValueTextEquals("include_usage"u8))
                        {
                            r.Read();
                            s.IncludeUsage = r.TokenType == JsonTokenType.True;
                        }
                        else if (r.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray)
                        {
                            r.Skip();
                        }
                    }
                }
                else
                {
                    r.Read();
                    r.Skip();
                }
            }
            if (r.TokenType != JsonTokenType.EndObject || r.Read())
                throw new JsonException("unexpected content after the top-level object");
        }
        catch (JsonException e)
        {
            s.Error = ProviderError.BadRequest($"The request body is not valid JSON (at byte {r.BytesConsumed}): {e.Message}");
            return s;
        }
        catch (InvalidOperationException e)
        {
            // e.g. a string with a lone surrogate escape (\ud800) that cannot become text
            s.Error = ProviderError.BadRequest($"The request body has a string that is not valid text (at byte {r.BytesConsumed}): {e.Message}");
            return s;
        }
        s.EstimatedInputTokens = c.Estimate;
        s.InputTokenBound = c.Bound;
        s.Choices = Math.Max(n, bestOf); // best_of generates (and bills) best_of completions and returns n of them
        if (s.Model is null) return Fail(ref s, "model", "'model' is required.");
        if (s.Model.Length == 0 || s.Model.Length > 256) return Fail(ref s, "model", "'model' must be 1-256 characters.");
        if (!sawMessages) return Fail(ref s, "messages", "'messages' is required: an array of message objects.");
        if (dialect == Dialect.Anthropic && !sawMaxTokens && !countTokens) return Fail(ref s, "max_tokens", "'max_tokens' is required for the Messages API.");
        return s;
    }

    /// <summary>What the estimate and the input bound are made of: string bytes as they stand in the JSON body, inline data, images, messages.</summary>
    public struct PromptCounts
    {
        public long TextBytes, DataBytes, Images, ImageUrls, Messages;

        /// <summary>The high estimate of the input tokens (see <see cref="RequestScan.EstimatedInputTokens"/>).</summary>
        public readonly long Estimate => (long)Math.Ceiling(TextBytes / BytesPerToken) + Images * ImageTokens + Messages * 4 + 3;

        /// <summary>The count the input cannot exceed (see <see cref="RequestScan.InputTokenBound"/>).</summary>
        public readonly long Bound => TextBytes + DataBytes + ImageUrls * ImageUrlTokenBound + (Messages + 1) * MessageOverheadTokens;
    }

    /// <summary>Walks one value (array, object or scalar), summing string bytes; base64 image data and URLs count as images.</summary>
    private static void CountPrompt(ref Utf8JsonReader r, ref PromptCounts c)
    {
        if (r.TokenType == JsonTokenType.String)
        {
            c.TextBytes += r.HasValueSequence ? r.ValueSequence.Length : r.ValueSpan.Length;
            return;
        }
        if (r.TokenType is not (JsonTokenType.StartArray or JsonTokenType.StartObject)) return;
        var depth = r.CurrentDepth;
        var topArray = r.TokenType == JsonTokenType.StartArray;
        var image = false;
        var inline = false;
        while (r.Read() && r.CurrentDepth > depth)
        {
            switch (r.TokenType)
            {
                case JsonTokenType.StartObject when topArray && r.CurrentDepth == depth + 1:
                    c.Messages++;
                    break;
                case JsonTokenType.PropertyName:
                    inline = r.ValueTextEquals("data"u8);
                    image = inline || r.ValueTextEquals("url"u8) || r.ValueTextEquals("image_url"u8);
                    break;
                case JsonTokenType.String:
                    var bytes = r.HasValueSequence ? r.ValueSequence.Length : r.ValueSpan.Length;
                    if (image)
                    {
                        c.Images++;
                        // inline data (base64 or a data: URL) bounds its own tokens by its bytes; a fetched URL by the largest image
                        if (inline || (r.ValueSpan.Length > 5 && r.ValueSpan.StartsWith("data:"u8))) c.DataBytes += bytes;
                        else c.ImageUrls++;
                    }
                    else c.TextBytes += bytes;
                    image = false;
                    break;
            }
        }
    }

    /// <summary>A key as it may appear in a message: at most 64 characters.</summary>
    /// <summary>
    /// Whether the property name the reader is on was already a top-level key. Plain names are compared as body bytes;
    /// an escaped name (<c>"mo\u0064el"</c>), a split buffer or more than <paramref name="keys"/> can hold switches to
    /// comparing unescaped strings, with the earlier keys carried over.
    /// </summary>
    private static bool SeenBefore(ref Utf8JsonReader r, ReadOnlySpan<byte> body, scoped Span<long> keys, ref int count, ref List<string>? many)
    {
        if (many is null && !r.ValueIsEscaped && !r.HasValueSequence && count < keys.Length)
        {
            var name = r.ValueSpan;
            for (var i = 0; i < count; i++)
                if (body.Slice((int)(keys[i] >> 32), (int)(uint)keys[i]).SequenceEqual(name)) return true;
            keys[count++] = ((r.TokenStartIndex + 1) << 32) | (uint)name.Length;
            return false;
        }
        if (many is null)
        {
            many = new List<string>(count + 8);
            for (var i = 0; i < count; i++) many.Add(System.Text.Encoding.UTF8.GetString(body.Slice((int)(keys[i] >> 32), (int)(uint)keys[i])));
        }
        var key = r.GetString()!;
        if (many.Contains(key, StringComparer.Ordinal)) return true;
        many.Add(key);
        return false;
    }

    public static string Shown(string key) => key.Length <= 64 ? key : key[..64] + "...";

    private static RequestScan Fail(ref RequestScan s, string field, string message)
    {
        s.Error = ProviderError.BadRequest(message, field);
        return s;
    }
}
