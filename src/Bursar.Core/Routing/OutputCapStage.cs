using System.Text.Json.Nodes;
using Bursar.Core.Pipeline;
using Microsoft.Extensions.AI;

namespace Bursar.Core.Routing;

/// <summary>
/// Output caps and stop sequences: a route's fixed cap, or the one learned from its ledger (p95 + 10%,
/// <see cref="OutputCapLearner"/>), lowers the output limit (never raises the caller's); its stop sequences are added.
/// Admission reserves the capped limit.
/// </summary>
public sealed class OutputCapStage(OutputCapLearner caps) : ILeverStage, IRequestEdit
{
    public string Name => "output-cap";

    public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        var asked = call.Request.MaxTokens;
        if (call.Policy is { } route)
        {
            var cap = call.OutputCap = caps.CapFor(route); // fixed, or learned from the ledger
            if (cap is { } low && call.Request.Api == WireApi.Responses && low < OutputCaps.ResponsesMinimumOutputTokens)
                cap = call.OutputCap = OutputCaps.ResponsesMinimumOutputTokens; // what goes upstream is what admission reserves
            call.MaxTokens = cap is { } c && (asked is null || asked > c) ? c : asked;
            if ((cap is not null || route.Stop.Length > 0) && call.Request.Api != WireApi.Embeddings) call.Edits.Add(this);
        }
        else call.MaxTokens = asked;
        return next(call, cancellationToken);
    }

    public bool Apply(JsonObject body, in EditTarget target) => target.Call.Request.Api switch
    {
        // the Responses API has no stop sequences: only the cap applies (max_output_tokens)
        WireApi.Responses when !target.Anthropic => OutputCaps.ApplyResponses(body, target.Call.OutputCap),
        WireApi.Embeddings => false,
        _ => OutputCaps.Apply(body, target.Anthropic, target.Call.OutputCap, target.Call.Policy?.Stop ?? []),
    };

    public void Apply(ChatOptions options, in EditTarget target)
    {
        if (target.Call.OutputCap is { } cap && (options.MaxOutputTokens is null || options.MaxOutputTokens > cap)) options.MaxOutputTokens = cap;
        if (target.Call.Policy is { Stop.Length: > 0 } route)
        {
            var stop = options.StopSequences ??= [];
            foreach (var s in route.Stop) if (!stop.Contains(s)) stop.Add(s);
        }
    }
}

public static class OutputCapStageExtensions
{
    /// <summary>Route output caps (fixed or learned) and stop sequences.</summary>
    public static LeverPipelineBuilder UseOutputCaps(this LeverPipelineBuilder builder) => builder.Use<OutputCapStage>();
}
