using System.Security.Cryptography;
using System.Text;

namespace Bursar.Core.Keys;

/// <summary>
/// A Bursar virtual key: what a caller authenticates with. Provider keys never leave the gateway.
/// Only the SHA-256 of the secret is stored; <see cref="Prefix"/> is kept to recognise a key in lists and logs.
/// </summary>
public sealed record VirtualKey
{
    public required string Id { get; init; }
    public required string Hash { get; init; }
    public required string Prefix { get; init; }
    public string? Name { get; init; }
    public string? Team { get; init; }
    public string? Customer { get; init; }
    public string? Feature { get; init; }
    /// <summary>Attribution headers this key's callers may set (team, customer, feature, task, template, run). Null = the default policy.</summary>
    public IReadOnlyList<string>? AllowedTagHeaders { get; init; }
    /// <summary>
    /// Customers this key's callers may name with <c>x-bursar-customer</c>; <c>*</c> allows any. Null = none: a key that does not fix its customer
    /// may not name one, so it can neither spend another customer's budgets nor be attributed to them.
    /// </summary>
    public IReadOnlyList<string>? AllowedCustomers { get; init; }
    /// <summary>When a budget would refuse a call, serve it with this cheaper model instead (the ledger records the downgrade).</summary>
    public string? DowngradeModel { get; init; }
    /// <summary>What to do with a model that has no price while budgets apply: <c>allow</c> (and flag) or <c>refuse</c>. Default allow.</summary>
    public string UnpricedPolicy { get; init; } = "allow";
    public required DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset? RevokedAt { get; init; }

    public bool IsRevoked => RevokedAt is not null;

    /// <summary>The null object: no key yet (a call refused before authentication). Lets no tag through and names no customer.</summary>
    public static VirtualKey Anonymous { get; } = new() { Id = "", Hash = "", Prefix = "", CreatedAt = DateTimeOffset.UnixEpoch, AllowedTagHeaders = [] };

    public const string SecretPrefix = "bsr_";

    /// <summary>Creates a new random secret (<c>bsr_</c> + 40 url-safe characters).</summary>
    public static string NewSecret()
    {
        Span<byte> bytes = stackalloc byte[30];
        RandomNumberGenerator.Fill(bytes);
        return SecretPrefix + Convert.ToBase64String(bytes).Replace('+', 'x').Replace('/', 'y');
    }

    public static string HashSecret(string secret)
    {
        Span<byte> hash = stackalloc byte[32];
        var max = Encoding.UTF8.GetMaxByteCount(secret.Length);
        byte[]? rented = null;
        Span<byte> buf = max <= 512 ? stackalloc byte[max] : (rented = System.Buffers.ArrayPool<byte>.Shared.Rent(max));
        var n = Encoding.UTF8.GetBytes(secret, buf);
        SHA256.HashData(buf[..n], hash);
        if (rented is not null) System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        return Convert.ToHexStringLower(hash);
    }

    public static string DisplayPrefix(string secret) => secret.Length > 12 ? secret[..12] : secret;
}

public interface IKeyStore
{
    Task AddAsync(VirtualKey key, CancellationToken cancellationToken);
    Task<VirtualKey?> FindByHashAsync(string hash, CancellationToken cancellationToken);
    Task<IReadOnlyList<VirtualKey>> ListAsync(CancellationToken cancellationToken);
    /// <summary>Revokes by id or by the displayed prefix; false when no key matches.</summary>
    Task<bool> RevokeAsync(string idOrPrefix, DateTimeOffset when, CancellationToken cancellationToken);
}
