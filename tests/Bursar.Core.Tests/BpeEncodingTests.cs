using System.Text;
using Bursar.Core.Tokens;
using Microsoft.ML.Tokenizers;

namespace Bursar.Core.Tests;

/// <summary>
/// Bursar's compact tiktoken encodings give exactly the counts and ids of Microsoft.ML.Tokenizers' (the reference) on
/// real pages, prompts and agent runs, on every script, and on input built to find the edges: special tokens, whitespace
/// before them, lone surrogates, control characters, random code points.
/// </summary>
public sealed class BpeEncodingTests
{
    private static readonly Lazy<Tokenizer> ReferenceO200k = new(() => TiktokenTokenizer.CreateForEncoding("o200k_base"));
    private static readonly Lazy<Tokenizer> ReferenceCl100k = new(() => TiktokenTokenizer.CreateForEncoding("cl100k_base"));

    private static string Data(string path) => SharedData.Path(path.Split('/'));

    public static TheoryData<string> Encodings => ["o200k_base", "cl100k_base"];

    private static (BpeEncoding Ours, Tokenizer Reference) Pair(string name) =>
        name == "o200k_base" ? (BpeEncoding.O200k, ReferenceO200k.Value) : (BpeEncoding.Cl100k, ReferenceCl100k.Value);

    private static void AssertSame(string name, string text, string what)
    {
        var (ours, reference) = Pair(name);
        var expected = reference.EncodeToIds(text);
        var actual = ours.EncodeToIds(text);
        if (!expected.SequenceEqual(actual))
        {
            var i = 0;
            while (i < Math.Min(expected.Count, actual.Count) && expected[i] == actual[i]) i++;
            Assert.Fail($"{name} on {what}: ids differ at token {i} of {expected.Count} (reference {(i < expected.Count ? expected[i] : -1)}, ours {(i < actual.Count ? actual[i] : -1)}); text near there: '{Around(reference, expected, i)}'");
        }
        Assert.Equal(reference.CountTokens(text), ours.CountTokens(text));
    }

    private static string Around(Tokenizer t, IReadOnlyList<int> ids, int i) =>
        t.Decode(ids.Skip(Math.Max(0, i - 3)).Take(6)) ?? "";

    public static readonly string[] Scripts =
    [
        "The quick brown fox jumps over the lazy dog. Don't, won't, I'll, we're, they've, she'd, I'm — it's 3.14159 and 1234567 items.",
        "DON'T SHOUT. O'Neil's McDonald'S iPhone XMLHttpRequest camelCaseWords snake_case_words kebab-case-words",
        "Le cœur a ses raisons que la raison ne connaît point. Ça coûte 12,50 € ; l'été dernier, où étiez-vous ?",
        "Größenmaßstäbe für Straßenübergänge: Äpfel, Öfen, Übermut. Die Zeitschrift „Süddeutsche“ erscheint täglich.",
        "Съешь же ещё этих мягких французских булок, да выпей чаю. Москва — столица России.",
        "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
        "我能吞下玻璃而不伤身体。今天天气很好，我们去公园散步吧！北京是中国的首都。",
        "私はガラスを食べられます。それは私を傷つけません。東京は日本の首都です。カタカナとひらがな。",
        "나는 유리를 먹을 수 있어요. 그래도 아프지 않아요. 서울은 한국의 수도입니다.",
        "أنا قادر على أكل الزجاج و هذا لا يؤلمني. القاهرة هي عاصمة مصر.",
        "אני יכול לאכול זכוכית וזה לא מזיק לי. ירושלים היא בירת ישראל.",
        "मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती. नई दिल्ली भारत की राजधानी है।",
        "ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
        "நான் கண்ணாடி சாப்பிடுவேன், அதனால் எனக்கு ஒரு கேடும் வராது.",
        "Tôi có thể ăn thủy tinh mà không hại gì. Hà Nội là thủ đô của Việt Nam.",
        "Cam yiyebilirim, bana zararı dokunmaz. İstanbul'un nüfusu ıııİİİ çok kalabalık.",
        "ሰማይ አይታረስ ንጉሥ አይከሰስ። Ἐν ἀρχῇ ἦν ὁ λόγος. ᚠᛇᚻ᛫ᛒᛦᚦ. ᐊᓕᒍᖅ ᓂᕆᔭᕌᖓᒃᑯ",
        "Emoji: 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🏳️‍🌈 ❤️‍🔥 🤖💸📉 and a flag run 🇯🇵🇺🇸🇩🇪🇬🇧",
        "Combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353\u0354 zalgo: h\u0336\u0337e\u0338\u0321\u0322llo",
        "Code: for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }\n\tif (x != null && y?.z is { } w) return w;\r\n    // done\n",
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\\n\\u00e9\"}],\"max_tokens\":16,\"temperature\":0.2}",
        "Whitespace:   three   spaces\t\ttabs\n\n\nnewlines\r\n\r\nCRLF \u00a0nbsp\u2003em-space\u3000ideographic   \n   trailing   ",
        "Numbers: 1 12 123 1234 12345 123456 1,234,567.89 0x1F 1e-10 ٣٤٥ ४५६ 一二三 ①②③ ½ ¾",
        "Special: <|endoftext|> text <|endofprompt|>after<|endoftext|><|endoftext|> <|fim_prefix|>x<|fim_middle|>y<|fim_suffix|>z <|not_special|> <| |>",
        "Before specials:   <|endoftext|>\n\n<|endoftext|> \t<|endofprompt|>",
        "Punctuation runs: !!!??? ... --- === *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}} ||| \\\\\\ /// ''' \"\"\" ``` ~~~",
        "URLs: https://example.com/a/b?c=d&e=f#g mailto:someone@example.org C:\\Program Files\\x.exe ../../etc/passwd",
        "Control: \u0000\u0001\u0007\u001b[31mred\u001b[0m \u200b\u200c\u200d\u2060\ufeff \u202e reversed \u202c",
    ];

    [Theory]
    [MemberData(nameof(Encodings))]
    public void Every_script_and_edge_case_encodes_as_the_reference_does(string encoding)
    {
        foreach (var text in Scripts) AssertSame(encoding, text, text[..Math.Min(20, text.Length)]);
        AssertSame(encoding, string.Join("\n", Scripts), "all scripts together");
    }

    [Theory]
    [MemberData(nameof(Encodings))]
    public void Lone_surrogates_and_broken_pairs_encode_as_the_reference_does(string encoding)
    {
        AssertSame(encoding, "a\ud800b", "a lone high surrogate");
        AssertSame(encoding, "a\udc00b", "a lone low surrogate");
        AssertSame(encoding, "\udc00\ud800", "a reversed pair");
        AssertSame(encoding, "x \ud83d", "a high surrogate at the end");
        AssertSame(encoding, "\ud83d\ude00\ud83d", "a pair then a lone half");
    }

    /// <summary>Random strings drawn from code points across the planes, seeded, so a failure repeats.</summary>
    [Theory]
    [MemberData(nameof(Encodings))]
    public void Random_code_points_encode_as_the_reference_does(string encoding)
    {
        var rng = new Random(20261203);
        int[][] ranges = [[0x20, 0x7e], [0x00, 0x20], [0xa0, 0x2ff], [0x300, 0x36f], [0x370, 0x52f], [0x590, 0x6ff], [0x900, 0xdff], [0xe00, 0xeff],
            [0x1100, 0x11ff], [0x2000, 0x206f], [0x3000, 0x30ff], [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0xfe00, 0xffef], [0x1f300, 0x1faff], [0x10000, 0x10ffff]];
        for (var t = 0; t < 300; t++)
        {
            var sb = new StringBuilder();
            var length = rng.Next(1, 60);
            for (var i = 0; i < length; i++)
            {
                var r = ranges[rng.Next(ranges.Length)];
                var cp = rng.Next(r[0], r[1] + 1);
                if (cp is >= 0xd800 and <= 0xdfff) cp = 'x';
                sb.Append(char.ConvertFromUtf32(cp));
                if (rng.Next(4) == 0) sb.Append(' ');
            }
            AssertSame(encoding, sb.ToString(), $"random string {t}");
        }
    }

    [Theory]
    [MemberData(nameof(Encodings))]
    public void Real_web_pages_encode_as_the_reference_does(string encoding)
    {
        var pages = Directory.GetDirectories(Data("documents/readability")).Order(StringComparer.Ordinal).ToArray();
        Assert.True(pages.Length > 90, "the readability pages are missing");
        // every page's article and a slice of its raw HTML (the whole HTML of 98 pages would take the reference minutes)
        foreach (var page in pages)
        {
            var expected = File.ReadAllText(Path.Combine(page, "expected.html"));
            AssertSame(encoding, expected, Path.GetFileName(page) + "/expected.html");
            var source = File.ReadAllText(Path.Combine(page, "source.html"));
            AssertSame(encoding, source[..Math.Min(source.Length, 20_000)], Path.GetFileName(page) + "/source.html");
        }
    }

    [Fact]
    public void Prompts_and_agent_runs_encode_as_the_reference_does()
    {
        AssertSame("o200k_base", File.ReadAllText(Data("context/tau_bench_airline_gpt4o.json"))[..300_000], "tau-bench runs");
        AssertSame("o200k_base", File.ReadAllText(Data("context/tau_bench_airline_tools.json")), "tau-bench tools");
        AssertSame("o200k_base", File.ReadAllText(Data("semantic_cache/gptcache_mock_paraphrases.json")), "paraphrases");
        foreach (var csv in Directory.GetFiles(Data("routing/mmlu"), "*.csv").Order(StringComparer.Ordinal).Take(8))
            AssertSame("o200k_base", File.ReadAllText(csv), Path.GetFileName(csv));
    }

    [Fact]
    public void The_vocabularies_load_whole()
    {
        Assert.Equal(199998, BpeEncoding.O200k.TokenCount);
        Assert.Equal(100256, BpeEncoding.Cl100k.TokenCount);
        // a token's rank is its id, both ways
        Assert.Equal(ReferenceO200k.Value.EncodeToIds("hello"), [BpeEncoding.O200k.Rank("hello"u8)]);
        Assert.Equal(-1, BpeEncoding.O200k.Rank("zzzzzzzzzzzzzzzzzzzz"u8));
        Assert.Equal(-1, BpeEncoding.O200k.Rank([]));
    }

    [Fact]
    public void A_malformed_vocabulary_line_is_named()
    {
        var e = Assert.Throws<InvalidDataException>(() => BpeEncoding.Parse("test", "aGk= 0\nnot-base64! 1\n"u8, new System.Text.RegularExpressions.Regex("."), []));
        Assert.Contains("line 2", e.Message);
    }
}
