using System.Text.Json.Nodes;

namespace Bursar.Core.Tokens;

/// <summary>
/// Estimates the input tokens of a whole request body (either dialect) before the call: text of system prompts, messages,
/// tool definitions, tool calls and tool results, plus per-message framing; images count a fixed <see cref="ImageTokens"/>.
/// For estimates only; billing always uses the provider's reported usage.
/// </summary>
public sealed class PromptTokenEstimator(TokenCounter counter)
{
    /// <summary>Tokens charged per image when its size is unknown (about a 1000x1000 image on both providers).</summary>
    public const int ImageTokens = 1_000;

    /// <summary>The estimate for <paramref name="body"/>; linear in its size (see <see cref="TokenCounter"/>), and stops when <paramref name="ct"/> is canceled.</summary>
    public long Estimate(string model, JsonObject body, CancellationToken ct = default)
    {
        long total = 3;
        var text = new System.Text.StringBuilder();
        if (body["tools"] is JsonArray tools) text.Append(tools.ToJsonString()).Append('\n');
        switch (body["system"])
        {
            case JsonValue v when v.TryGetValue<string>(out var s): text.Append(s).Append('\n'); break;
            case JsonArray blocks: foreach (var b in blocks) text.Append(b?["text"]?.GetValue<string>()).Append('\n'); break;
        }
        if (body["messages"] is JsonArray messages)
        {
            foreach (var m in messages)
            {
                ct.ThrowIfCancellationRequested();
                total += TokenCounter.OpenAIMessageOverhead + AppendMessage(m, text);
            }
        }
        return total + counter.Count(model, text.ToString(), ct);
    }

    /// <summary>
    /// Appends the text of one message a provider bills (its content's text, tool calls, tool uses and results) to <paramref name="text"/>;
    /// returns the tokens it adds beyond that text (images). Its framing is <see cref="TokenCounter.OpenAIMessageOverhead"/>.
    /// </summary>
    public static long AppendMessage(JsonNode? message, System.Text.StringBuilder text)
    {
        long extra = 0;
        if (message?["tool_calls"] is JsonArray calls) text.Append(calls.ToJsonString());
        switch (message?["content"])
        {
            case JsonValue v when v.TryGetValue<string>(out var s):
                text.Append(s).Append('\n');
                break;
            case JsonArray parts:
                foreach (var p in parts) extra += Part(p, text);
                break;
        }
        return extra;
    }

    private static long Part(JsonNode? p, System.Text.StringBuilder text)
    {
        var type = p?["type"] is JsonValue tv && tv.TryGetValue<string>(out var t) ? t : null;
        switch (type)
        {
            case "text":
                text.Append(p!["text"]?.GetValue<string>()).Append('\n');
                return 0;
            case "image" or "image_url":
                return ImageTokens;
            case "tool_result":
                if (p!["content"] is JsonValue cv && cv.TryGetValue<string>(out var s)) text.Append(s).Append('\n');
                else if (p["content"] is JsonArray inner) { long n = 0; foreach (var i in inner) n += Part(i, text); return n; }
                return 0;
            case "tool_use":
                text.Append(p!["name"]?.ToJsonString()).Append(p["input"]?.ToJsonString()).Append('\n');
                return 0;
            default:
                text.Append(p?.ToJsonString()).Append('\n');
                return 0;
        }
    }
}
