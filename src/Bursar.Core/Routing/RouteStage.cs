using System.Globalization;
using Bursar.Core.Attribution;
using Bursar.Core.Pipeline;

namespace Bursar.Core.Routing;

/// <summary>The optional LLM classifier of a ladder route: a one-word difficulty (simple, medium, hard) for a prompt, from a cheap model.</summary>
public interface IDifficultyClassifier
{
    /// <param name="call">The call being routed (a face reaches its own provider through it).</param>
    Task<(string? Label, string Detail)> ClassifyAsync(LeverCall call, string model, string prompt, CallAttribution attribution, string route, CancellationToken cancellationToken);

    /// <summary>The null object: no classifier call can be made here; the ladder goes to its top rung and says why.</summary>
    public static IDifficultyClassifier None { get; } = new NoClassifier();

    private sealed class NoClassifier : IDifficultyClassifier
    {
        public Task<(string? Label, string Detail)> ClassifyAsync(LeverCall call, string model, string prompt, CallAttribution attribution, string route, CancellationToken cancellationToken) =>
            Task.FromResult<(string?, string)>((null, $"no LLM classifier is available for {model}"));
    }
}

/// <summary>
/// Model-tier routing: the call's route policy serves another model (any provider; the face translates) or a tier of
/// the requested model's family; a ladder route picks its rung with the complexity router (score -> calibrated
/// quantile -> rung) or the LLM classifier. The decision and why are on the ledger (<c>routing_reason</c>), also when
/// it keeps the model; a model no deployment serves is a 404 naming what is served.
/// </summary>
public sealed class RouteStage(ComplexityRouter router, IDifficultyClassifier classifier, IServedModels served) : ILeverStage
{
    public string Name => "route";

    public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        var asked = call.Request.Model;
        var route = call.Request.Api == WireApi.Embeddings ? null : call.Policy; // a route's chat models never serve an embedding call
        if (route is { Ladder.Length: > 0 }) return LadderAsync(call, route, next, cancellationToken);
        var target = route?.Model ?? (route?.Tier is { } tier ? TierLadders.Rung(asked, tier) : null) ?? asked;
        if (!served.Serves(target))
        {
            // a ladder's rungs are checked against what is served when the route loads
            call.Refuse(LeverRefusal.ModelNotFound(target == asked ? served.NotServed(asked) : $"Route '{route!.Name}' serves {target} for {asked}, but: " + served.NotServed(target)));
            return ValueTask.CompletedTask;
        }
        string? why = target == asked || route is null ? null
            : route.Tier is not null ? $"policy: route '{route.Name}' serves the {route.Tier} tier {target} for {asked}"
            : $"policy: route '{route.Name}' serves {target} for {asked}";
        Decide(call, route, asked, target, why);
        return next(call, cancellationToken);
    }

    private async ValueTask LadderAsync(LeverCall call, RoutePolicy route, LeverNext next, CancellationToken cancellationToken)
    {
        var (target, why) = await ClimbAsync(call, route, cancellationToken).ConfigureAwait(false);
        Decide(call, route, call.Request.Model, target, why);
        await next(call, cancellationToken).ConfigureAwait(false);
    }

    private static void Decide(LeverCall call, RoutePolicy? route, string asked, string target, string? why)
    {
        if (route is not null)
        {
            if (target != asked)
            {
                call.RoutedFrom = asked;
                call.RoutingReason = why;
            }
            else if (why is not null) call.RoutingReason = "kept: " + why; // the decision is on the ledger even when it keeps the model
        }
        call.Model = target;
    }

    private async Task<(string Model, string Why)> ClimbAsync(LeverCall call, RoutePolicy route, CancellationToken ct)
    {
        // P(needs the strong model), calibrated to the route's strong share; an unreadable body scores as an empty prompt
        (string Text, int Turns) prompt = call.Request.TryBody(out var body) ? Safe(body) : ("", 0);
        if (route.Classifier == "llm")
        {
            // a one-word difficulty from the cheapest tier; no usable answer means the top rung
            var model = route.ClassifierModel ?? route.Ladder[0];
            var (label, detail) = await classifier.ClassifyAsync(call, model, prompt.Text, call.Attribution, route.Name, ct).ConfigureAwait(false);
            var rung = route.Ladder[label is null ? route.Ladder.Length - 1 : DifficultyPrompt.Rung(label, route.Ladder.Length)];
            return (rung, $"llm classifier: route '{route.Name}' {detail} -> {rung}{(label is null ? " (no usable answer: top rung)" : "")}");
        }
        var score = router.Score(prompt.Text, call.Attribution.Task, Math.Max(1, prompt.Turns));
        var quantile = router.QuantileOf(score);
        var (chosen, low) = route.Rung(quantile);
        return (chosen, string.Create(CultureInfo.InvariantCulture, $"classifier: route '{route.Name}' score {score:F3} (quantile {quantile:F2}, strong share {route.StrongShare:F2}) -> {chosen}{(low ? " (low confidence: one rung up)" : "")}"));
    }

    private static (string Text, int Turns) Safe(System.Text.Json.Nodes.JsonObject body)
    {
        try { return PromptText.LastUser(body); }
        catch (Exception e) when (CallRequest.IsBadJson(e)) { return ("", 0); }
    }
}

public static class RouteStageExtensions
{
    /// <summary>Route policies, tier ladders and the complexity router choose the model (options: <see cref="RoutingOptions"/>).</summary>
    public static LeverPipelineBuilder UseRouting(this LeverPipelineBuilder builder) => builder.Use<RouteStage>();
}
