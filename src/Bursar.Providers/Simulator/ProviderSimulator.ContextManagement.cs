using System.Text;
using System.Text.Json.Nodes;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Simulator;

public sealed partial class ProviderSimulator
{
    /// <summary>The beta header value the clearing edits need.</summary>
    public const string ContextManagementBeta = "context-management-2025-06-27";
    /// <summary>The beta header value server-side compaction needs.</summary>
    public const string CompactionBeta = "compact-2026-01-12";

    /// <summary>The request's <c>context_management</c> edits, validated: what to clear and when, and whether to compact.</summary>
    private sealed record ContextEdits(JsonObject? Clear, JsonObject? Compact, bool CompactBeta);

    /// <summary>What the edits did to one request: the body the model reads, the applied clearing edit, the compaction summary.</summary>
    private sealed record ContextApplied(JsonObject Body, int ClearedToolUses, long ClearedInputTokens, string? Summary, long CompactionInput, bool Paused);

    private static ContextEdits? ReadContextEdits(JsonObject body, SimulatorExchange x)
    {
        const Dialect d = Dialect.Anthropic;
        var beta = x.Header("anthropic-beta") ?? "";
        var compactBeta = beta.Contains(CompactionBeta, StringComparison.Ordinal);
        if (body["context_management"] is not { } cm) return compactBeta ? new ContextEdits(null, null, true) : null;
        if (cm is not JsonObject cmo || cmo["edits"] is not JsonArray edits) throw Bad(d, "context_management.edits: Field required");
        JsonObject? clear = null, compact = null;
        for (var i = 0; i < edits.Count; i++)
        {
            var type = edits[i]?["type"] is JsonValue tv && tv.TryGetValue<string>(out var t) ? t : null;
            switch (type)
            {
                case "clear_tool_uses_20250919":
                    if (!beta.Contains(ContextManagementBeta, StringComparison.Ordinal))
                        throw Bad(d, $"context_management.edits.{i}: clear_tool_uses_20250919 requires the anthropic-beta header '{ContextManagementBeta}'");
                    clear = edits[i]!.AsObject();
                    break;
                case "compact_20260112":
                    if (!compactBeta) throw Bad(d, $"context_management.edits.{i}: compact_20260112 requires the anthropic-beta header '{CompactionBeta}'");
                    compact = edits[i]!.AsObject();
                    if (Trigger(compact, 150_000) < 50_000) throw Bad(d, $"context_management.edits.{i}.trigger.value: must be at least 50000");
                    break;
                case "clear_thinking_20251015":
                    break; // the Simulator does not think: nothing to clear
                default:
                    throw Bad(d, $"context_management.edits.{i}.type: Input tag '{type}' found using 'type' does not match any of the expected tags: 'clear_tool_uses_20250919', 'clear_thinking_20251015', 'compact_20260112'");
            }
        }
        return new ContextEdits(clear, compact, compactBeta);
    }

    private static long Trigger(JsonObject edit, long fallback) =>
        edit["trigger"]?["value"] is JsonValue v && v.TryGetValue<long>(out var n) ? n : fallback;

    /// <summary>
    /// Drops what a compaction block sent back replaces (every message before the one holding it, and the blocks before it), as the API does;
    /// the block itself is read as the summary text.
    /// </summary>
    private static JsonObject AfterCompactionBlock(JsonObject body)
    {
        if (body["messages"] is not JsonArray messages) return body;
        for (var i = messages.Count - 1; i >= 0; i--)
        {
            if (messages[i]?["content"] is not JsonArray blocks) continue;
            var at = -1;
            for (var j = 0; j < blocks.Count; j++) if (blocks[j]?["type"]?.GetValue<string>() == "compaction") at = j;
            if (at < 0) continue;
            var copy = body.DeepClone().AsObject();
            var kept = new JsonArray();
            var first = copy["messages"]![i]!.DeepClone().AsObject();
            var firstBlocks = new JsonArray();
            var summary = blocks[at]!["content"]?.GetValue<string>() ?? "";
            firstBlocks.Add(new JsonObject { ["type"] = "text", ["text"] = summary });
            for (var j = at + 1; j < blocks.Count; j++) firstBlocks.Add(blocks[j]!.DeepClone());
            first["content"] = firstBlocks;
            first["role"] = "user"; // the summary opens the conversation the model reads
            kept.Add(first);
            for (var k = i + 1; k < messages.Count; k++) kept.Add(messages[k]!.DeepClone());
            copy["messages"] = kept;
            return copy;
        }
        return body;
    }

    /// <summary>Applies the clearing edit and server-side compaction to what the model reads (the caller's body is not changed).</summary>
    private ContextApplied ApplyContextEdits(JsonObject body, ContextEdits edits, string model)
    {
        var work = body;
        int cleared = 0;
        long clearedTokens = 0;
        var input = CountPrompt(work, model);
        if (edits.Clear is { } clear)
        {
            var triggerType = clear["trigger"]?["type"]?.GetValue<string>() ?? "input_tokens";
            var trigger = Trigger(clear, triggerType == "tool_uses" ? long.MaxValue : 100_000);
            var uses = ToolResults(work);
            var fires = triggerType == "tool_uses" ? uses.Count >= trigger : input >= trigger;
            if (fires)
            {
                var keep = clear["keep"]?["value"] is JsonValue kv && kv.TryGetValue<int>(out var k) ? k : 3;
                var exclude = (clear["exclude_tools"] as JsonArray)?.Select(e => e?.GetValue<string>()).ToHashSet() ?? [];
                var copy = work.DeepClone().AsObject();
                var results = ToolResults(copy);
                var clearable = results.Where(r => !exclude.Contains(r.Name)).ToList();
                foreach (var r in clearable.Take(Math.Max(0, clearable.Count - keep)))
                {
                    r.Block["content"] = "[cleared to save context]";
                    cleared++;
                }
                var after = CountPrompt(copy, model);
                var atLeast = clear["clear_at_least"]?["value"] is JsonValue av && av.TryGetValue<long>(out var a) ? a : 0;
                if (cleared > 0 && input - after >= atLeast)
                {
                    clearedTokens = input - after;
                    work = copy;
                    input = after;
                }
                else cleared = 0;
            }
        }
        if (edits.Compact is { } compact && input >= Trigger(compact, 150_000) && work["messages"] is JsonArray messages && messages.Count > 1)
        {
            // the summary: the conversation's first words, then a line per earlier message; what the model then reads is the summary and the newest turn
            var sb = new StringBuilder("Summary of the conversation so far (").Append(messages.Count - 1).Append(" messages):");
            for (var i = 0; i < messages.Count - 1; i++)
            {
                var text = messages[i]?["content"] is JsonValue v && v.TryGetValue<string>(out var s) ? s : messages[i]?["content"]?.ToJsonString() ?? "";
                sb.Append("\n- ").Append(messages[i]?["role"]).Append(": ").Append(text.Length > 80 ? text[..80] : text);
            }
            var summary = sb.ToString();
            var paused = compact["pause_after_compaction"]?.GetValue<bool>() ?? false;
            var copy = work.DeepClone().AsObject();
            var last = messages[^1]!.DeepClone().AsObject();
            var lastBlocks = last["content"] is JsonArray lb ? lb : new JsonArray(new JsonObject { ["type"] = "text", ["text"] = last["content"]?.DeepClone() });
            lastBlocks.Insert(0, new JsonObject { ["type"] = "text", ["text"] = summary });
            last["content"] = lastBlocks;
            copy["messages"] = new JsonArray(last);
            return new ContextApplied(copy, cleared, clearedTokens, summary, input, paused);
        }
        return new ContextApplied(work, cleared, clearedTokens, null, 0, false);
    }

    private long CountPrompt(JsonObject body, string model) => ReadAnthropicPrompt(body, requireMaxTokens: false).Blocks.Sum(b => (long)b.Tokens);

    private static List<(JsonObject Block, string Name)> ToolResults(JsonObject body)
    {
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        var list = new List<(JsonObject, string)>();
        if (body["messages"] is not JsonArray messages) return list;
        foreach (var m in messages)
        {
            if (m?["content"] is not JsonArray blocks) continue;
            foreach (var b in blocks)
            {
                if (b is not JsonObject o) continue;
                var type = o["type"]?.GetValue<string>();
                if (type == "tool_use" && o["id"]?.GetValue<string>() is { } id) names[id] = o["name"]?.GetValue<string>() ?? "";
                if (type == "tool_result") list.Add((o, names.GetValueOrDefault(o["tool_use_id"]?.GetValue<string>() ?? "", "")));
            }
        }
        return list;
    }

    /// <summary>The response's <c>context_management</c> (the clearing edit applied, or null), written on the message or the final <c>message_delta</c>.</summary>
    private static void WriteAppliedEdits(System.Text.Json.Utf8JsonWriter w, ContextApplied? applied)
    {
        if (applied is null) return;
        w.WriteStartObject("context_management");
        w.WriteStartArray("applied_edits");
        if (applied.ClearedToolUses > 0)
        {
            w.WriteStartObject();
            w.WriteString("type", "clear_tool_uses_20250919");
            w.WriteNumber("cleared_tool_uses", applied.ClearedToolUses);
            w.WriteNumber("cleared_input_tokens", applied.ClearedInputTokens);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>The usage's <c>iterations</c>: the compaction (its input the whole conversation, its output the summary), then the message.</summary>
    private void WriteIterations(System.Text.Json.Utf8JsonWriter w, ContextApplied? applied, ContextEdits? edits, CacheOutcome c, long output, string model)
    {
        if (edits is not { CompactBeta: true }) return;
        w.WriteStartArray("iterations");
        if (applied?.Summary is { } summary)
        {
            w.WriteStartObject();
            w.WriteString("type", "compaction");
            w.WriteNumber("input_tokens", applied.CompactionInput);
            w.WriteNumber("cache_creation_input_tokens", 0);
            w.WriteNumber("cache_read_input_tokens", 0);
            w.WriteNumber("output_tokens", _counter.Count(model, summary));
            w.WriteEndObject();
        }
        if (applied is not { Paused: true })
        {
            w.WriteStartObject();
            w.WriteString("type", "message");
            w.WriteNumber("input_tokens", c.Input);
            w.WriteNumber("cache_creation_input_tokens", c.Write5m + c.Write1h);
            w.WriteNumber("cache_read_input_tokens", c.CacheRead);
            w.WriteStartObject("cache_creation");
            w.WriteNumber("ephemeral_5m_input_tokens", c.Write5m);
            w.WriteNumber("ephemeral_1h_input_tokens", c.Write1h);
            w.WriteEndObject();
            w.WriteNumber("output_tokens", output);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    private static void WriteCompactionBlock(System.Text.Json.Utf8JsonWriter w, string summary)
    {
        w.WriteStartObject();
        w.WriteString("type", "compaction");
        w.WriteString("content", summary);
        w.WriteNull("encrypted_content");
        w.WriteEndObject();
    }
}
