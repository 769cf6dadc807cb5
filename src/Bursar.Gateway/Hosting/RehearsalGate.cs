using System.Buffers;
using System.Net;
using System.Security.Cryptography;
using Bursar.Core.Keys;
using Bursar.Providers.Simulator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Gateway.Hosting;

/// <summary>
/// The door for the gateway's own warm-up calls (<see cref="GatewayWarmup"/>): a call carrying
/// <c>x-bursar-warm-up: {token}</c> is a rehearsal (<see cref="Bursar.Core.Pipeline.LeverCall.Rehearsal"/>) instead of
/// a caller's call. The token is 256 random bits made at start, kept in this process only, never logged; the header
/// counts only from this machine (a loopback peer, or a peer at the listening address itself) and only until the warm-up
/// ends (<see cref="Close"/>), after which the header is ignored and the call needs a virtual key like any other.
/// The same door guards the rehearsals' upstream (<see cref="UpstreamPath"/>): a Simulator of the gateway's own,
/// reached over loopback like a provider, answering only warm-up calls, and 404 to anything else.
/// </summary>
public sealed class RehearsalGate(ProviderSimulator simulator)
{
    public const string Header = "x-bursar-warm-up";

    /// <summary>Where the rehearsals' upstream answers on the gateway's own address (<c>{path}/v1/...</c>) while the warm-up runs.</summary>
    public const string UpstreamPath = "/_bursar/warm-up";

    private volatile byte[]? _token = RandomNumberGenerator.GetBytes(32);

    /// <summary>The key a rehearsal is made under: no team, no budget, no tags; it is in no store.</summary>
    public static VirtualKey Key { get; } = new() { Id = "warm-up", Hash = "", Prefix = "warm-up", CreatedAt = DateTimeOffset.UnixEpoch, AllowedTagHeaders = [] };

    /// <summary>The header's value while the door is open; null once closed.</summary>
    internal string? Token => _token is { } t ? Convert.ToHexString(t) : null;

    /// <summary>True when the warm-up is still running and <paramref name="ctx"/> is one of its calls.</summary>
    public bool Admits(HttpContext ctx)
    {
        var token = _token;
        if (token is null) return false; // the one check every caller's call pays after start
        var values = ctx.Request.Headers[Header];
        if (values.Count != 1 || values[0] is not { Length: 64 } given) return false;
        if (ctx.Connection.RemoteIpAddress is not { } remote) return false;
        if (remote.IsIPv4MappedToIPv6) remote = remote.MapToIPv4();
        var local = ctx.Connection.LocalIpAddress is { IsIPv4MappedToIPv6: true } l ? l.MapToIPv4() : ctx.Connection.LocalIpAddress;
        if (!IPAddress.IsLoopback(remote) && !remote.Equals(local)) return false;
        Span<byte> bytes = stackalloc byte[32];
        return Convert.FromHexString(given, bytes, out _, out var written) == OperationStatus.Done && written == 32
            && CryptographicOperations.FixedTimeEquals(bytes, token);
    }

    /// <summary>A caller's call arrived while the warm-up ran (<see cref="NoteCaller"/>): the warm-up ends.</summary>
    public bool CallersArrived => _callers;
    private volatile bool _callers;

    /// <summary>Called for every call that is not a rehearsal: while the warm-up runs, it ends it.</summary>
    public void NoteCaller()
    {
        if (_token is not null) _callers = true;
    }

    /// <summary>Ends rehearsals for good: from now on the header is ignored.</summary>
    public void Close() => _token = null;

    /// <summary>The rehearsals' upstream: the warm-up Simulator for a warm-up call, 404 for anything else.</summary>
    internal Task ServeUpstreamAsync(HttpContext ctx)
    {
        if (Admits(ctx)) return SimulatorEndpoints.ServeAsync(ctx, simulator);
        ctx.Response.StatusCode = StatusCodes.Status404NotFound;
        return Task.CompletedTask;
    }
}

public static class RehearsalGateExtensions
{
    /// <summary>Maps the warm-up calls' upstream (<see cref="RehearsalGate.UpstreamPath"/>); it answers only while the warm-up runs.</summary>
    public static WebApplication MapWarmUpUpstream(this WebApplication app)
    {
        var gate = app.Services.GetRequiredService<RehearsalGate>();
        app.Map(RehearsalGate.UpstreamPath, branch => branch.Run(gate.ServeUpstreamAsync));
        return app;
    }
}
