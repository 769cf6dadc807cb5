using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;

namespace Bursar.Core.Context;

/// <summary>
/// Compaction for the .NET library face: the call's <see cref="ChatMessage"/> list is read as a conversation of content blocks (one
/// message a message, in the Anthropic messages shape whatever the provider: a tool message is a user turn of tool results, so every
/// block keeps its place), the gateway's <see cref="Compactor"/> edits that, and the edit is mapped back onto the messages: the ones it
/// dropped go, a header block opens the first kept user message, a pruned result becomes its stub; every other message and content is
/// the caller's own object. One compactor, so both faces compact alike.
/// </summary>
internal static class ChatCompaction
{
    private const string MessageIndex = "bursar_i", ContentIndex = "bursar_j";

    /// <summary>The messages as a request body the compactor reads (<c>{"messages": [...]}</c>, Anthropic shape, system messages kept as messages).</summary>
    public static JsonObject Body(IReadOnlyList<ChatMessage> messages)
    {
        var array = new JsonArray();
        for (var i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            var o = new JsonObject { [MessageIndex] = i };
            if (m.Role == ChatRole.System)
            {
                o["role"] = "system";
                o["content"] = m.Text;
                array.Add(o);
                continue;
            }
            o["role"] = m.Role == ChatRole.Assistant ? "assistant" : "user";
            var blocks = new JsonArray();
            for (var j = 0; j < m.Contents.Count; j++)
            {
                var block = m.Contents[j] switch
                {
                    TextContent t => new JsonObject { ["type"] = "text", ["text"] = t.Text },
                    FunctionCallContent c => new JsonObject { ["type"] = "tool_use", ["id"] = c.CallId, ["name"] = c.Name, ["input"] = Arguments(c.Arguments) },
                    FunctionResultContent r => new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = r.CallId, ["content"] = ResultText(r.Result) },
                    var other => new JsonObject { ["type"] = "other", ["text"] = other.ToString() },
                };
                block[ContentIndex] = j;
                blocks.Add(block);
            }
            o["content"] = blocks;
            array.Add(o);
        }
        return new JsonObject { ["messages"] = array };
    }

    /// <summary>The compacted body mapped back onto <paramref name="messages"/> (replaced in place).</summary>
    public static void MapBack(JsonObject body, List<ChatMessage> messages)
    {
        var original = messages.ToArray();
        messages.Clear();
        foreach (var node in body["messages"]!.AsArray())
        {
            var o = node!.AsObject();
            var m = original[o[MessageIndex]!.GetValue<int>()];
            if (o["content"] is not JsonArray blocks) { messages.Add(m); continue; }
            var changed = blocks.Count != m.Contents.Count;
            var list = new List<AIContent>(blocks.Count);
            foreach (var b in blocks)
            {
                if (b?[ContentIndex] is not JsonValue jv)
                {
                    // a block the compactor added: the header of the turns it replaced
                    list.Add(new TextContent(b?["text"]?.GetValue<string>()));
                    changed = true;
                    continue;
                }
                var c = m.Contents[jv.GetValue<int>()];
                if (c is FunctionResultContent r && b["content"] is JsonValue cv && cv.TryGetValue<string>(out var text) && text != ResultText(r.Result))
                {
                    list.Add(new FunctionResultContent(r.CallId, text) { AdditionalProperties = r.AdditionalProperties });
                    changed = true;
                }
                else list.Add(c);
            }
            messages.Add(!changed ? m : new ChatMessage(m.Role, list) { AuthorName = m.AuthorName, AdditionalProperties = m.AdditionalProperties, MessageId = m.MessageId });
        }
    }

    private static JsonNode Arguments(IDictionary<string, object?>? arguments)
    {
        if (arguments is null) return new JsonObject();
        try { return JsonSerializer.SerializeToNode(arguments, AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(IDictionary<string, object?>))) ?? new JsonObject(); }
        catch (Exception e) when (e is NotSupportedException or JsonException or InvalidOperationException) { return new JsonObject(); }
    }

    /// <summary>A tool result as the text a provider is sent: a string as it is, anything else as JSON.</summary>
    private static string ResultText(object? result)
    {
        switch (result)
        {
            case null: return "";
            case string s: return s;
            case JsonElement e: return e.GetRawText();
            default:
                try { return JsonSerializer.Serialize(result, AIJsonUtilities.DefaultOptions.GetTypeInfo(result.GetType())); }
                catch (Exception e) when (e is NotSupportedException or JsonException or InvalidOperationException) { return result.ToString() ?? ""; }
        }
    }
}
