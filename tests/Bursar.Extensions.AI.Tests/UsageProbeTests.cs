using Microsoft.Extensions.AI;
using Xunit.Abstractions;

namespace Bursar.Extensions.AI.Tests;

public sealed class UsageProbeTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Probe()
    {
        var sim = SdkClients.Simulator();
        var system = string.Join(" ", Enumerable.Repeat("You are a careful assistant who answers questions about the billing rules of the company.", 80));
        foreach (var (name, client) in new[] { ("openai", SdkClients.OpenAI(sim, "gpt-4o-mini")), ("anthropic", SdkClients.Anthropic(sim, "claude-sonnet-4-5")) })
        {
            for (var i = 0; i < 2; i++)
            {
                var msgs = new List<ChatMessage> { new(ChatRole.System, system), new(ChatRole.User, "What is the rule?") };
                if (name == "anthropic") msgs[0].Contents[0].WithCacheControl(new Anthropic.Models.Messages.CacheControlEphemeral { Ttl = Anthropic.Models.Messages.Ttl.Ttl1h });
                var r = await client.GetResponseAsync(msgs);
                var u = r.Usage!;
                var t = ChatMetering.ToTokenUsage(u, r.RawRepresentation); output.WriteLine($"{t} {name} #{i}: in={u.InputTokenCount} cached={u.CachedInputTokenCount} out={u.OutputTokenCount} reasoning={u.ReasoningTokenCount} extra={string.Join(",", u.AdditionalCounts?.Select(kv => kv.Key + "=" + kv.Value) ?? [])} model={r.ModelId} finish={r.FinishReason} raw={r.RawRepresentation?.GetType().FullName}");
            }
        }
    }
}
