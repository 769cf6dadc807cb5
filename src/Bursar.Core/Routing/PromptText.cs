using System.Text;
using System.Text.Json.Nodes;

namespace Bursar.Core.Routing;

/// <summary>What the complexity router reads from a request body (either dialect): the newest user turn's text and the number of user turns.</summary>
public static class PromptText
{
    public static (string Text, int Turns) LastUser(JsonObject body)
    {
        if (body["messages"] is not JsonArray messages)
        {
            // the Responses API: input is a string (one user turn) or items, whose messages carry a role
            switch (body["input"])
            {
                case JsonValue v when v.TryGetValue<string>(out var s): return (s, 1);
                case JsonArray items: messages = items; break;
                default: return ("", 0);
            }
        }
        string last = "";
        var turns = 0;
        foreach (var m in messages)
        {
            if (m?["role"] is not JsonValue r || !r.TryGetValue<string>(out var role) || role != "user") continue;
            turns++;
            last = Text(m["content"]);
        }
        return (last, turns);
    }

    private static string Text(JsonNode? content)
    {
        switch (content)
        {
            case JsonValue v when v.TryGetValue<string>(out var s): return s;
            case JsonArray parts:
                var sb = new StringBuilder();
                foreach (var p in parts)
                    if (p?["text"] is JsonValue t && t.TryGetValue<string>(out var text)) sb.Append(text).Append('\n');
                return sb.ToString();
            default: return "";
        }
    }
}
