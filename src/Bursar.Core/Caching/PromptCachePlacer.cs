using System.Collections.Concurrent;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Tokens;

namespace Bursar.Core.Caching;

/// <summary>Options of provider prompt caching (<c>Bursar:PromptCache</c>).</summary>
public sealed class PromptCacheOptions
{
    public const string Section = "Bursar:PromptCache";

    /// <summary>Place Anthropic cache breakpoints on stable prefixes. Default true.</summary>
    public bool PlaceBreakpoints { get; set; } = true;
    /// <summary>Set OpenAI's <c>prompt_cache_key</c> per route and tenant when the caller did not. Default true.</summary>
    public bool SetOpenAIPromptCacheKey { get; set; } = true;
    /// <summary>Features (routes) where Bursar leaves prompt caching alone.</summary>
    public List<string> DisabledFeatures { get; set; } = [];
    /// <summary>Minimum cacheable prefix for models whose minimum the catalog does not know. Default 1024.</summary>
    public int DefaultMinimumTokens { get; set; } = 1024;

    /// <summary>Features whose volatile system-prompt values (timestamps, ids) are moved into the newest user turn, after the cached prefix. "*" for all. Opt-in.</summary>
    public List<string> MoveVolatileToEnd { get; set; } = [];

    public bool AppliesTo(string? feature) => feature is null || !DisabledFeatures.Contains(feature, StringComparer.Ordinal);

    public bool MovesVolatile(string? feature) => MoveVolatileToEnd.Contains("*") || (feature is not null && MoveVolatileToEnd.Contains(feature, StringComparer.Ordinal));
}

/// <summary>What the placer did to one request.</summary>
public readonly record struct PlacementResult(int Placed, int CallerBreakpoints, long CachedPrefixTokens, string? Ttl)
{
    public static PlacementResult None => default;
}

/// <summary>
/// Places Anthropic <c>cache_control</c> breakpoints on the stable prefix of a Messages request: the end of the tools,
/// the end of the system prompt, and the last message before the newest user turn. At most 4 breakpoints including the
/// caller's own; a caller's marker is never moved or removed; a breakpoint goes only where the prefix reaches the
/// model's minimum cacheable length. The TTL comes from how often that prefix recurs on its route: 1 hour when reuse is
/// sparser than 5 minutes (1-hour writes cost 2x and pay only then), else 5 minutes; 1-hour marks always precede 5-minute ones.
/// </summary>
public sealed class PromptCachePlacer(TokenCounter counter, TimeProvider time)
{
    public const int MaxBreakpoints = 4;
    private static readonly TimeSpan FiveMinutes = TimeSpan.FromMinutes(5);
    private readonly ConcurrentDictionary<ulong, int> _tokenCache = new();
    private readonly ConcurrentDictionary<(string Route, ulong Prefix), DateTimeOffset> _lastSeen = new();

    public PlacementResult Place(JsonObject body, string model, string route, long minimumTokens, CancellationToken ct = default)
    {
        var existing = CountBreakpoints(body);
        var slots = MaxBreakpoints - existing;
        if (slots <= 0) return new PlacementResult(0, existing, 0, null);

        // the blocks in prefix order, with a running hash and token count
        var blocks = new List<(JsonObject Block, long Tokens, ulong Hash, bool Candidate)>();
        ulong h = 14695981039346656037UL;
        long total = 0;
        void Add(JsonObject block, bool candidate)
        {
            // text blocks hash their text in place (no serialization); other blocks hash their JSON without cache_control
            string? text = block["type"] is JsonValue tv && tv.TryGetValue<string>(out var type) && type == "text" && block["text"] is JsonValue xv && xv.TryGetValue<string>(out var x) ? x : null;
            var content = text ?? StripCacheControl(block);
            var bh = System.IO.Hashing.XxHash64.HashToUInt64(System.Runtime.InteropServices.MemoryMarshal.AsBytes(content.AsSpan()));
            total += _tokenCache.GetOrAdd(bh, _ => counter.Count(model, content, ct));
            h = (h ^ bh) * 1099511628211UL;
            blocks.Add((block, total, h, candidate));
        }
        if (body["tools"] is JsonArray tools)
        {
            for (var i = 0; i < tools.Count; i++)
                if (tools[i] is JsonObject t) Add(t, i == tools.Count - 1);
        }
        if (body["system"] is JsonValue sv && sv.TryGetValue<string>(out var systemText) && systemText.Length > 0)
        {
            // a string system prompt cannot carry a breakpoint: the same text as one block can
            body["system"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = systemText });
        }
        if (body["system"] is JsonArray system)
        {
            for (var i = 0; i < system.Count; i++)
                if (system[i] is JsonObject b) Add(b, i == system.Count - 1);
        }
        if (body["messages"] is JsonArray messages)
        {
            var lastUser = -1;
            for (var i = messages.Count - 1; i >= 0; i--)
            {
                if (messages[i]?["role"] is JsonValue rv && rv.TryGetValue<string>(out var role) && role == "user") { lastUser = i; break; }
            }
            for (var i = 0; i < messages.Count; i++)
            {
                if (messages[i] is not JsonObject m) continue;
                if (m["content"] is JsonValue cv && cv.TryGetValue<string>(out var text))
                    m["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = text });
                if (m["content"] is not JsonArray parts) continue;
                for (var j = 0; j < parts.Count; j++)
                {
                    if (parts[j] is not JsonObject p) continue;
                    var cacheable = p["type"] is JsonValue tv && tv.TryGetValue<string>(out var type) && type is not ("thinking" or "redacted_thinking")
                        && !(type == "text" && p["text"] is JsonValue t && t.TryGetValue<string>(out var s) && s.Length == 0);
                    // the last stable message: the turn just before the newest user message
                    Add(p, cacheable && i == lastUser - 1 && j == parts.Count - 1);
                }
            }
        }

        var now = time.GetUtcNow();
        var placed = 0;
        long cachedTokens = 0;
        var fiveMinuteSeen = false; // a 5-minute mark earlier forbids a 1-hour one later
        string? lastTtl = null;
        for (var i = 0; i < blocks.Count && placed < slots; i++)
        {
            var (block, tokens, hash, candidate) = blocks[i];
            if (block.ContainsKey("cache_control"))
            {
                if (!IsOneHour(block)) fiveMinuteSeen = true;
                continue;
            }
            if (!candidate || tokens < minimumTokens) continue;
            var oneHourLater = blocks.Skip(i + 1).Any(b => b.Block.ContainsKey("cache_control") && IsOneHour(b.Block));
            if (oneHourLater && fiveMinuteSeen) continue; // no TTL keeps the order valid here
            var key = (route, hash);
            var seenBefore = _lastSeen.TryGetValue(key, out var last);
            _lastSeen[key] = now;
            var sparse = seenBefore && now - last > FiveMinutes;
            var ttl = oneHourLater ? "1h" : fiveMinuteSeen ? "5m" : sparse ? "1h" : "5m";
            if (ttl == "5m") fiveMinuteSeen = true;
            block["cache_control"] = ttl == "1h" ? new JsonObject { ["type"] = "ephemeral", ["ttl"] = "1h" } : new JsonObject { ["type"] = "ephemeral" };
            placed++;
            cachedTokens = tokens;
            lastTtl = ttl;
        }
        if (_lastSeen.Count > 200_000) _lastSeen.Clear();
        if (_tokenCache.Count > 200_000) _tokenCache.Clear();
        return new PlacementResult(placed, existing, cachedTokens, lastTtl);
    }

    /// <summary>The tokens of a text block (cached by its hash: the same prefix is re-sent on every turn).</summary>
    public long CountTokens(string model, string text, CancellationToken ct = default)
    {
        var h = System.IO.Hashing.XxHash64.HashToUInt64(System.Runtime.InteropServices.MemoryMarshal.AsBytes(text.AsSpan()));
        var n = _tokenCache.GetOrAdd(h, _ => counter.Count(model, text, ct));
        if (_tokenCache.Count > 200_000) _tokenCache.Clear();
        return n;
    }

    private static bool IsOneHour(JsonObject block) => block["cache_control"]?["ttl"] is JsonValue v && v.TryGetValue<string>(out var t) && t == "1h";

    private static string StripCacheControl(JsonObject block)
    {
        if (!block.ContainsKey("cache_control")) return block.ToJsonString();
        var clone = (JsonObject)block.DeepClone();
        clone.Remove("cache_control");
        return clone.ToJsonString();
    }

    /// <summary>Breakpoints the caller placed: on tools, system blocks, message blocks, plus automatic caching at the top level.</summary>
    public static int CountBreakpoints(JsonObject body)
    {
        var n = body.ContainsKey("cache_control") ? 1 : 0;
        if (body["tools"] is JsonArray tools) n += tools.Count(t => t is JsonObject o && o.ContainsKey("cache_control"));
        if (body["system"] is JsonArray system) n += system.Count(b => b is JsonObject o && o.ContainsKey("cache_control"));
        if (body["messages"] is JsonArray messages)
            foreach (var m in messages)
                if (m?["content"] is JsonArray parts) n += parts.Count(p => p is JsonObject o && o.ContainsKey("cache_control"));
        return n;
    }

    /// <summary>The system prompt text of a request in either dialect (Anthropic <c>system</c>, OpenAI system/developer messages, Responses <c>instructions</c>).</summary>
    public static string SystemText(JsonObject body)
    {
        var sb = new StringBuilder();
        if (body["instructions"] is JsonValue iv && iv.TryGetValue<string>(out var instructions)) sb.Append(instructions).Append('\n');
        switch (body["system"])
        {
            case JsonValue v when v.TryGetValue<string>(out var s): sb.Append(s); break;
            case JsonArray blocks: foreach (var b in blocks) sb.Append(b?["text"] is JsonValue t && t.TryGetValue<string>(out var x) ? x : "").Append('\n'); break;
        }
        if (body["messages"] is JsonArray messages)
        {
            foreach (var m in messages)
            {
                var role = m?["role"] is JsonValue r && r.TryGetValue<string>(out var rr) ? rr : null;
                if (role is not ("system" or "developer")) break;
                if (m!["content"] is JsonValue c && c.TryGetValue<string>(out var ct)) sb.Append(ct).Append('\n');
            }
        }
        return sb.ToString();
    }

    /// <summary>The opt-in rewrite: volatile values leave the system prompt and go first in the newest user turn.</summary>
    public static bool MoveVolatileToEnd(JsonObject body)
    {
        if (body["messages"] is not JsonArray messages) return false;
        var values = new List<string>();
        string? Rewrite(string text)
        {
            if (VolatilePrefixDetector.MoveToEnd(text) is not { } moved) return null;
            values.Add(moved.Values);
            return moved.Stable;
        }
        switch (body["system"])
        {
            case JsonValue v when v.TryGetValue<string>(out var s) && Rewrite(s) is { } stable:
                body["system"] = stable;
                break;
            case JsonArray blocks:
                foreach (var b in blocks)
                    if (b is JsonObject o && o["text"] is JsonValue t && t.TryGetValue<string>(out var x) && Rewrite(x) is { } st) o["text"] = st;
                break;
        }
        foreach (var m in messages)
        {
            if (m?["role"] is not JsonValue r || !r.TryGetValue<string>(out var role) || role is not ("system" or "developer")) break;
            if (m["content"] is JsonValue c && c.TryGetValue<string>(out var ct) && Rewrite(ct) is { } st) m["content"] = st;
        }
        if (values.Count == 0) return false;
        var last = messages.LastOrDefault(x => x?["role"] is JsonValue lr && lr.TryGetValue<string>(out var role) && role == "user") as JsonObject;
        if (last is null) return false;
        var note = string.Join("\n", values);
        switch (last["content"])
        {
            case JsonValue lc when lc.TryGetValue<string>(out var text): last["content"] = note + "\n\n" + text; break;
            case JsonArray parts: parts.Insert(0, new JsonObject { ["type"] = "text", ["text"] = note }); break;
        }
        return true;
    }

    /// <summary>
    /// OpenAI's <c>prompt_cache_key</c> for a route and tenant (the team, else the key): requests with the same prefix land
    /// on warm caches. Not per end customer: customers of one feature share its prefix, and splitting them splits the cache.
    /// </summary>
    public static string OpenAIPromptCacheKey(string? route, string tenant)
    {
        var bytes = Encoding.UTF8.GetBytes((route ?? "-") + "\n" + tenant);
        return "bursar-" + System.IO.Hashing.XxHash64.HashToUInt64(bytes).ToString("x16", System.Globalization.CultureInfo.InvariantCulture);
    }
}
