using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.InteropServices;
using Bursar.Core.Tokens;

namespace Bursar.Core.Caching;

/// <summary>
/// The stable prefix of a prompt (its system text) as a hash and a token count, recorded on every large call's ledger row
/// so the advisor can see which calls re-send the same prefix and how often: the input to the prompt-caching prediction.
/// Token counts are memoized per prefix (a bounded table, cleared when full).
/// </summary>
public sealed class PrefixFingerprint(TokenCounter counter)
{
    private const int MaxEntries = 10_000;
    private readonly ConcurrentDictionary<(ulong, string), int> _tokens = new();

    public (string Hash, long Tokens)? Of(string model, string systemText, CancellationToken ct = default)
    {
        if (systemText.Length == 0) return null;
        var h = System.IO.Hashing.XxHash64.HashToUInt64(MemoryMarshal.AsBytes(systemText.AsSpan()));
        if (!_tokens.TryGetValue((h, model), out var n))
        {
            if (_tokens.Count >= MaxEntries) _tokens.Clear();
            n = _tokens[(h, model)] = counter.Count(model, systemText, ct);
        }
        return (h.ToString("x16", CultureInfo.InvariantCulture), n);
    }
}
