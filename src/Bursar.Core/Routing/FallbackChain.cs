using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;

namespace Bursar.Core.Routing;

/// <summary>
/// A route's fallbacks, the same for every face: the chosen model first, then the route's <c>Fallbacks</c> in order,
/// leaving out models nobody serves and models whose context window is too small for the call (named in the reason).
/// </summary>
public static class FallbackChain
{
    /// <summary>The models to try, in order, and those left out with why.</summary>
    public static (IReadOnlyList<string> Models, IReadOnlyList<string> Skipped) For(LeverCall call, PriceCatalog catalog, Func<string, bool> serves)
    {
        if (call.Policy is not { Fallbacks.Length: > 0 } route) return ([call.Model], []);
        var models = new List<string> { call.Model };
        var skipped = new List<string>();
        var needed = call.Request.EstimatedInputTokens + (call.MaxTokens ?? 0);
        foreach (var fb in route.Fallbacks)
        {
            if (fb == call.Model || !serves(fb)) continue;
            if (catalog.Find(fb).Price?.ContextWindow is { } window && needed > window)
            {
                skipped.Add($"{fb} (context window {window:N0} tokens < {needed:N0} needed)");
                continue;
            }
            models.Add(fb);
        }
        return (models, skipped);
    }

    /// <summary>
    /// Records on the call that it was served by <paramref name="served"/> rather than the chosen model: the ledger's
    /// routed-from and routing reason (the earlier reason kept in brackets). Returns the reason.
    /// </summary>
    public static string Explain(LeverCall call, string served, IReadOnlyList<string> failures, IReadOnlyList<string> skipped)
    {
        call.RoutedFrom ??= call.Request.Model;
        var parts = new List<string>();
        if (failures.Count == 0 && served != call.Model) parts.Add($"fallback to {served}: {call.Model}'s deployment is cooling down after recent failures");
        if (failures.Count > 0) parts.Add($"fallback to {served} after {string.Join("; ", failures)}");
        if (skipped.Count > 0) parts.Add($"skipped {string.Join("; ", skipped)}");
        call.RoutingReason = string.Join("; ", parts) + (call.RoutingReason is { } before ? $" (was: {before})" : "");
        return call.RoutingReason;
    }
}
