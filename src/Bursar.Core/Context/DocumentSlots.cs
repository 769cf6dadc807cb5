using System.Text.Json.Nodes;

namespace Bursar.Core.Context;

/// <summary>Where a document's text sits in a request body: the object holding it and the property name.</summary>
public readonly record struct DocumentSlot(JsonObject Owner, string Property, string Text);

/// <summary>
/// Finds the documents of a request body in either dialect: text of user turns and of tool results (OpenAI <c>user</c> and
/// <c>tool</c> messages, string or text parts; Anthropic <c>user</c> content, <c>text</c> blocks, <c>tool_result</c> content,
/// plain-text <c>document</c> sources). System prompts, assistant turns and tool definitions are never documents.
/// </summary>
public static class DocumentSlots
{
    public static List<DocumentSlot> Find(JsonObject body)
    {
        var slots = new List<DocumentSlot>();
        if (body["messages"] is not JsonArray messages) return slots;
        foreach (var node in messages)
        {
            if (node is not JsonObject m || m["role"] is not JsonValue rv || !rv.TryGetValue<string>(out var role)) continue;
            if (role is not ("user" or "tool")) continue;
            Content(m, "content", slots);
        }
        return slots;
    }

    private static void Content(JsonObject owner, string property, List<DocumentSlot> slots)
    {
        switch (owner[property])
        {
            case JsonValue v when v.TryGetValue<string>(out var s):
                slots.Add(new DocumentSlot(owner, property, s));
                break;
            case JsonArray parts:
                foreach (var p in parts)
                {
                    if (p is not JsonObject part || part["type"] is not JsonValue tv || !tv.TryGetValue<string>(out var type)) continue;
                    switch (type)
                    {
                        case "text" when part["text"] is JsonValue t && t.TryGetValue<string>(out var text):
                            slots.Add(new DocumentSlot(part, "text", text));
                            break;
                        case "tool_result":
                            Content(part, "content", slots);
                            break;
                        case "document" when part["source"] is JsonObject src && src["type"] is JsonValue st && st.TryGetValue<string>(out var srcType) && srcType == "text"
                                              && src["data"] is JsonValue dv && dv.TryGetValue<string>(out var data):
                            slots.Add(new DocumentSlot(src, "data", data));
                            break;
                    }
                }
                break;
        }
    }
}
