namespace Bursar.Core.Usage;

/// <summary>
/// Token counts of one call in Bursar's canonical form: every input class is separate (Anthropic's shape),
/// so <see cref="InputTokens"/> is uncached input only. <see cref="OutputTokens"/> is the billed output total
/// and includes <see cref="ReasoningTokens"/>, as both providers report it.
/// </summary>
public readonly record struct TokenUsage(
    long InputTokens,
    long CacheReadTokens,
    long CacheWrite5mTokens,
    long CacheWrite1hTokens,
    long OutputTokens,
    long ReasoningTokens = 0)
{
    public static TokenUsage Empty => default;

    /// <summary>All prompt tokens: uncached + cache reads + cache writes. Long-context tiers switch on this.</summary>
    public long TotalInputTokens => InputTokens + CacheReadTokens + CacheWrite5mTokens + CacheWrite1hTokens;

    public long CacheWriteTokens => CacheWrite5mTokens + CacheWrite1hTokens;

    public bool IsEmpty => TotalInputTokens == 0 && OutputTokens == 0;

    /// <summary>
    /// From OpenAI's shape, where <paramref name="promptTokens"/> includes <paramref name="cachedTokens"/>
    /// (and any <paramref name="cacheWriteTokens"/>), and completion tokens include reasoning tokens.
    /// </summary>
    public static TokenUsage FromOpenAI(long promptTokens, long cachedTokens, long completionTokens, long reasoningTokens = 0, long cacheWriteTokens = 0)
    {
        var uncached = Math.Max(0, promptTokens - cachedTokens - cacheWriteTokens);
        return new TokenUsage(uncached, cachedTokens, cacheWriteTokens, 0, completionTokens, reasoningTokens);
    }

    /// <summary>
    /// From Anthropic's shape: the three input counts are separate. When the TTL breakdown is missing,
    /// all creation tokens are 5-minute writes (as Anthropic bills them).
    /// </summary>
    public static TokenUsage FromAnthropic(long inputTokens, long cacheCreationTokens, long cacheReadTokens, long outputTokens, long? ephemeral5m = null, long? ephemeral1h = null)
    {
        long w5 = cacheCreationTokens, w1 = 0;
        if (ephemeral5m is not null || ephemeral1h is not null)
        {
            w1 = ephemeral1h ?? 0;
            w5 = ephemeral5m ?? Math.Max(0, cacheCreationTokens - w1);
        }
        return new TokenUsage(inputTokens, cacheReadTokens, w5, w1, outputTokens);
    }
}
