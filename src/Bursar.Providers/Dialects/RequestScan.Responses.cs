using System.Text.Json;

namespace Bursar.Providers.Dialects;

/// <summary>The one-pass scans of OpenAI's Responses and embeddings bodies (PROVIDER_API.md sections 8 and 9).</summary>
public partial struct RequestScan
{
    /// <summary>
    /// An input the body names but does not carry (a <c>file_id</c>, a <c>file_url</c>, an <c>item_reference</c>, a
    /// <c>conversation</c>): its tokens are unknown, so the bound is the model's context window (admission caps it there).
    /// </summary>
    public const long UnknownInputBound = 1L << 40;

    /// <summary>
    /// <c>POST /v1/responses</c>: model, stream, <c>max_output_tokens</c>, <c>previous_response_id</c>, <c>store</c>,
    /// temperature, and the input estimate and bound over <c>input</c>, <c>instructions</c> and <c>tools</c>. A chained
    /// call's stored context is not in the body: the face adds it (it knows what it served).
    /// </summary>
    public static RequestScan RunResponses(ReadOnlySpan<byte> body)
    {
        var s = new RequestScan { Choices = 1 };
        if (body.IsEmpty)
        {
            s.Error = ProviderError.BadRequest("The request body is empty; send a JSON object with 'model' and 'input'.");
            return s;
        }
        var r = new Utf8JsonReader(body, new JsonReaderOptions { MaxDepth = 128 });
        var sawInput = false;
        var unknown = false;
        var c = new PromptCounts();
        Span<long> keys = stackalloc long[32];
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
                if (SeenBefore(ref r, body, keys, ref keyCount, ref manyKeys))
                {
                    var key = r.GetString()!;
                    return Fail(ref s, key, $"The request body has the key '{Shown(key)}' more than once; send each field once.");
                }
                if (r.ValueTextEquals("model"u8))
                {
                    r.Read();
                    if (r.TokenType != JsonTokenType.String) return Fail(ref s, "model", "'model' must be a string naming the model, e.g. \"gpt-4.1\".");
                    s.Model = r.GetString();
                }
                else if (r.ValueTextEquals("stream"u8))
                {
                    r.Read();
                    if (r.TokenType is not (JsonTokenType.True or JsonTokenType.False or JsonTokenType.Null)) return Fail(ref s, "stream", "'stream' must be true or false.");
                    s.Stream = r.TokenType == JsonTokenType.True;
                }
                else if (r.ValueTextEquals("store"u8))
                {
                    r.Read();
                    if (r.TokenType is not (JsonTokenType.True or JsonTokenType.False or JsonTokenType.Null)) return Fail(ref s, "store", "'store' must be true or false.");
                    s.Store = r.TokenType == JsonTokenType.Null ? null : r.TokenType == JsonTokenType.True;
                }
                else if (r.ValueTextEquals("input"u8))
                {
                    r.Read();
                    if (r.TokenType is not (JsonTokenType.String or JsonTokenType.StartArray))
                        return Fail(ref s, "input", "'input' must be a string or an array of input items (messages, function_call_output, ...).");
                    if (r.TokenType == JsonTokenType.StartArray && !CountItems(ref r, ref c, ref unknown, out var bad))
                        return Fail(ref s, bad, $"'{bad}' must be an object: an input item such as {{\"role\":\"user\",\"content\":\"...\"}} or {{\"type\":\"function_call_output\",\"call_id\":\"...\",\"output\":\"...\"}}.");
                    if (r.TokenType == JsonTokenType.String)
                    {
                        c.TextBytes += r.HasValueSequence ? r.ValueSequence.Length : r.ValueSpan.Length;
                        c.Messages++;
                    }
                    sawInput = true;
                }
                else if (r.ValueTextEquals("instructions"u8))
                {
                    r.Read();
                    if (r.TokenType is not (JsonTokenType.String or JsonTokenType.Null)) return Fail(ref s, "instructions", "'instructions' must be a string (a system message for this response).");
                    if (r.TokenType == JsonTokenType.String)
                    {
                        c.TextBytes += r.HasValueSequence ? r.ValueSequence.Length : r.ValueSpan.Length;
                        c.Messages++;
                    }
                }
                else if (r.ValueTextEquals("tools"u8))
                {
                    r.Read();
                    if (r.TokenType is not (JsonTokenType.StartArray or JsonTokenType.Null)) return Fail(ref s, "tools", "'tools' must be an array of tools.");
                    // the whole definition is prompt: names and schema keys count too
                    var start = (int)r.TokenStartIndex;
                    r.Skip();
                    c.TextBytes += (int)r.BytesConsumed - start;
                }
                else if (r.ValueTextEquals("previous_response_id"u8))
                {
                    r.Read();
                    if (r.TokenType == JsonTokenType.Null) continue;
                    if (r.TokenType != JsonTokenType.String) return Fail(ref s, "previous_response_id", "'previous_response_id' must be a string: the id of a stored response (resp_...).");
                    s.PreviousResponseId = r.GetString();
                    if (s.PreviousResponseId!.Length is 0 or > 256) return Fail(ref s, "previous_response_id", "'previous_response_id' must be 1-256 characters.");
                }
                else if (r.ValueTextEquals("conversation"u8))
                {
                    r.Read();
                    r.Skip();
                    unknown = true; // the conversation's items live upstream
                }
                else if (r.ValueTextEquals("max_output_tokens"u8))
                {
                    r.Read();
                    if (r.TokenType == JsonTokenType.Null) continue;
                    if (r.TokenType != JsonTokenType.Number || !r.TryGetInt64(out var mt) || mt < 0)
                        return Fail(ref s, "max_output_tokens", "'max_output_tokens' must be a non-negative integer (it includes reasoning tokens).");
                    s.MaxTokens = mt;
                }
                else if (r.ValueTextEquals("temperature"u8))
                {
                    r.Read();
                    if (r.TokenType == JsonTokenType.Number && r.TryGetDouble(out var t) && t == 0) s.Deterministic = true;
                    else r.Skip();
                }
                else if (r.ValueTextEquals("messages"u8))
                {
                    return Fail(ref s, "messages", "'messages' is a Chat Completions field; the Responses API takes 'input' (a string or an array of items).");
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
            s.Error = ProviderError.BadRequest($"The request body has a string that is not valid text (at byte {r.BytesConsumed}): {e.Message}");
            return s;
        }
        s.EstimatedInputTokens = c.Estimate;
        s.InputTokenBound = unknown ? UnknownInputBound : c.Bound;
        if (s.Model is null) return Fail(ref s, "model", "'model' is required.");
        if (s.Model.Length == 0 || s.Model.Length > 256) return Fail(ref s, "model", "'model' must be 1-256 characters.");
        if (!sawInput && s.PreviousResponseId is null) return Fail(ref s, "input", "'input' is required: a string or an array of input items.");
        return s;
    }

    /// <summary>Counts an <c>input</c> array: each item is a message of the bound; file and item references are inputs of unknown size.</summary>
    private static bool CountItems(ref Utf8JsonReader r, ref PromptCounts c, ref bool unknown, out string bad)
    {
        bad = "";
        var depth = r.CurrentDepth;
        var index = 0;
        while (r.Read() && r.CurrentDepth > depth)
        {
            if (r.TokenType != JsonTokenType.StartObject)
            {
                bad = $"input[{index}]";
                return false;
            }
            c.Messages++;
            var itemDepth = r.CurrentDepth;
            var image = false;
            var inline = false;
            while (r.Read() && r.CurrentDepth > itemDepth)
            {
                switch (r.TokenType)
                {
                    case JsonTokenType.PropertyName:
                        if (r.ValueTextEquals("file_id"u8) || r.ValueTextEquals("file_url"u8)) unknown = true;
                        inline = r.ValueTextEquals("file_data"u8) || r.ValueTextEquals("data"u8);
                        image = inline || r.ValueTextEquals("image_url"u8) || r.ValueTextEquals("url"u8);
                        break;
                    case JsonTokenType.String:
                        var bytes = r.HasValueSequence ? r.ValueSequence.Length : r.ValueSpan.Length;
                        if (image)
                        {
                            c.Images++;
                            if (inline || (r.ValueSpan.Length > 5 && r.ValueSpan.StartsWith("data:"u8))) c.DataBytes += bytes;
                            else c.ImageUrls++;
                        }
                        else
                        {
                            c.TextBytes += bytes;
                            if (r.ValueTextEquals("item_reference"u8)) unknown = true;
                        }
                        image = false;
                        break;
                }
            }
            index++;
        }
        return true;
    }

    /// <summary>
    /// <c>POST /v1/embeddings</c>: model and the input bound (a string's UTF-8 bytes, a token array's length). Always
    /// deterministic: identical requests get identical vectors, so the exact cache may answer them.
    /// </summary>
    public static RequestScan RunEmbeddings(ReadOnlySpan<byte> body)
    {
        var s = new RequestScan { Choices = 1, Deterministic = true };
        if (body.IsEmpty)
        {
            s.Error = ProviderError.BadRequest("The request body is empty; send a JSON object with 'model' and 'input'.");
            return s;
        }
        var r = new Utf8JsonReader(body, new JsonReaderOptions { MaxDepth = 64 });
        var sawInput = false;
        long bytes = 0, tokens = 0, items = 0;
        Span<long> keys = stackalloc long[32];
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
                if (SeenBefore(ref r, body, keys, ref keyCount, ref manyKeys))
                {
                    var key = r.GetString()!;
                    return Fail(ref s, key, $"The request body has the key '{Shown(key)}' more than once; send each field once.");
                }
                if (r.ValueTextEquals("model"u8))
                {
                    r.Read();
                    if (r.TokenType != JsonTokenType.String) return Fail(ref s, "model", "'model' must be a string naming the embedding model, e.g. \"text-embedding-3-small\".");
                    s.Model = r.GetString();
                }
                else if (r.ValueTextEquals("input"u8))
                {
                    r.Read();
                    sawInput = true;
                    if (r.TokenType == JsonTokenType.String)
                    {
                        bytes += r.HasValueSequence ? r.ValueSequence.Length : r.ValueSpan.Length;
                        items = 1;
                        continue;
                    }
                    if (r.TokenType != JsonTokenType.StartArray)
                        return Fail(ref s, "input", "'input' must be a string, an array of strings, an array of tokens or an array of token arrays.");
                    var depth = r.CurrentDepth;
                    while (r.Read() && r.CurrentDepth > depth)
                    {
                        switch (r.TokenType)
                        {
                            case JsonTokenType.String when r.CurrentDepth == depth + 1:
                                bytes += r.HasValueSequence ? r.ValueSequence.Length : r.ValueSpan.Length;
                                items++;
                                break;
                            case JsonTokenType.Number:
                                tokens++;
                                if (r.CurrentDepth == depth + 1) items = 1;
                                break;
                            case JsonTokenType.StartArray when r.CurrentDepth == depth + 1:
                                items++;
                                break;
                            case JsonTokenType.EndArray:
                                break;
                            default:
                                return Fail(ref s, $"input[{items}]", $"'input[{items}]' must be a string or an array of integer tokens.");
                        }
                    }
                }
                else if (r.ValueTextEquals("stream"u8))
                {
                    r.Read();
                    if (r.TokenType == JsonTokenType.True) return Fail(ref s, "stream", "Embeddings do not stream; remove 'stream'.");
                    r.Skip();
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
            s.Error = ProviderError.BadRequest($"The request body has a string that is not valid text (at byte {r.BytesConsumed}): {e.Message}");
            return s;
        }
        s.EstimatedInputTokens = (long)Math.Ceiling(bytes / BytesPerToken) + tokens;
        s.InputTokenBound = bytes + tokens + items; // a byte-level BPE token covers at least one byte; a token array is its length
        s.MaxTokens = 0;
        if (s.Model is null) return Fail(ref s, "model", "'model' is required.");
        if (s.Model.Length == 0 || s.Model.Length > 256) return Fail(ref s, "model", "'model' must be 1-256 characters.");
        if (!sawInput || items == 0) return Fail(ref s, "input", "'input' is required: a string or an array of strings (not empty).");
        return s;
    }
}
