using System.Collections.Concurrent;

namespace Bursar.Providers.Simulator;

/// <summary>One cacheable block of an Anthropic prompt, in prefix order (tools, system, messages).</summary>
public readonly record struct PromptBlock(ulong Hash, int Tokens, TimeSpan? Breakpoint);

/// <summary>Token split the cache model decided for one request.</summary>
public readonly record struct CacheOutcome(long Input, long CacheRead, long Write5m, long Write1h);

/// <summary>
/// The providers' prompt-cache rules, with real TTLs on a <see cref="TimeProvider"/>:
/// Anthropic: explicit breakpoints (at most 4, checked by the caller), a per-model minimum prefix, 5-minute or
/// 1-hour entries refreshed on a hit, and a 20-block lookback from each breakpoint.
/// OpenAI: automatic for prompts of at least 1024 tokens, hits in 128-token steps, keyed by prompt_cache_key.
/// </summary>
public sealed class PromptCacheModel(TimeProvider time)
{
    public const int LookbackBlocks = 20;
    public const int OpenAIMinimum = 1024;
    public const int OpenAIStep = 128;

    private readonly ConcurrentDictionary<(string Model, ulong Hash), (DateTimeOffset Expires, TimeSpan Ttl)> _anthropic = new();
    private readonly ConcurrentDictionary<(string Model, string Key, ulong Hash), DateTimeOffset> _openai = new();

    public CacheOutcome Anthropic(string model, IReadOnlyList<PromptBlock> blocks, int minTokens)
    {
        var n = blocks.Count;
        var now = time.GetUtcNow();
        var cumHash = new ulong[n];
        var cumTokens = new long[n];
        ulong h = 14695981039346656037UL;
        long t = 0;
        for (var i = 0; i < n; i++)
        {
            h = Mix(h, blocks[i].Hash);
            t += blocks[i].Tokens;
            cumHash[i] = h;
            cumTokens[i] = t;
        }
        // longest hit within the lookback window of any breakpoint
        var hit = -1;
        for (var b = 0; b < n; b++)
        {
            if (blocks[b].Breakpoint is null) continue;
            for (var j = b; j >= Math.Max(0, b - LookbackBlocks + 1) && j > hit; j--)
            {
                if (_anthropic.TryGetValue((model, cumHash[j]), out var e) && e.Expires > now)
                {
                    hit = j;
                    break;
                }
            }
        }
        long read = hit >= 0 ? cumTokens[hit] : 0, w5 = 0, w1 = 0, covered = read;
        if (hit >= 0)
        {
            var e = _anthropic[(model, cumHash[hit])];
            _anthropic[(model, cumHash[hit])] = (now + e.Ttl, e.Ttl); // a hit refreshes the TTL at no charge
        }
        for (var b = hit + 1; b < n; b++)
        {
            if (blocks[b].Breakpoint is not { } ttl || cumTokens[b] < minTokens) continue;
            var seg = cumTokens[b] - covered;
            if (ttl >= TimeSpan.FromHours(1)) w1 += seg; else w5 += seg;
            covered = cumTokens[b];
            _anthropic[(model, cumHash[b])] = (now + ttl, ttl);
        }
        var total = n == 0 ? 0 : cumTokens[n - 1];
        return new CacheOutcome(total - covered, read, w5, w1);
    }

    /// <summary>Returns the cached prefix length for <paramref name="tokens"/> and records this prompt's checkpoints.</summary>
    public long OpenAI(string model, string cacheKey, IReadOnlyList<int> tokens, TimeSpan ttl)
    {
        if (tokens.Count < OpenAIMinimum) return 0;
        var now = time.GetUtcNow();
        ulong h = 14695981039346656037UL;
        long cached = 0;
        var checkpoints = new List<ulong>();
        for (var i = 0; i < tokens.Count; i++)
        {
            h = Mix(h, (ulong)(uint)tokens[i]);
            var len = i + 1;
            if (len >= OpenAIMinimum && (len - OpenAIMinimum) % OpenAIStep == 0)
            {
                checkpoints.Add(h);
                if (_openai.TryGetValue((model, cacheKey, h), out var exp) && exp > now) cached = len;
            }
        }
        foreach (var c in checkpoints) _openai[(model, cacheKey, c)] = now + ttl;
        if (_openai.Count > SweepAbove) Sweep(now); // long, varied prompts must not grow the model without bound
        return cached;
    }

    /// <summary>Past this many checkpoints, expired ones are dropped.</summary>
    private const int SweepAbove = 200_000;

    private void Sweep(DateTimeOffset now)
    {
        foreach (var (k, exp) in _openai) if (exp <= now) _openai.TryRemove(k, out _);
        foreach (var (k, v) in _anthropic) if (v.Expires <= now) _anthropic.TryRemove(k, out _);
    }

    public void Clear()
    {
        _anthropic.Clear();
        _openai.Clear();
    }

    internal static ulong Mix(ulong h, ulong v)
    {
        unchecked
        {
            h ^= v;
            h *= 1099511628211UL;
            h ^= h >> 29;
            return h;
        }
    }

    public static ulong HashBytes(ReadOnlySpan<byte> data) => System.IO.Hashing.XxHash64.HashToUInt64(data);
}
