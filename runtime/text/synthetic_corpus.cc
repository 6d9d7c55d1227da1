#include "runtime/text/synthetic_corpus.h"

namespace tritmoe {
namespace {

// Written for this project. Any edit changes the synthetic vocabulary of every generated model.
constexpr std::string_view kText =
    R"corpus(The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran
into the forest before anyone could ask what had happened. In the morning the farmer counted
his chickens twice, then a third time, and found that none were missing after all.

A mixture of experts is a neural network in which every token is sent to a small number of
specialists instead of the whole model. The router looks at the hidden state of the token,
scores each expert, and keeps the best eight of two hundred and fifty six. Because only a few
experts run for each token, the model can be very large while the cost of one step stays
moderate. The experts are stored with about one and a half bits per weight, which is why the
whole model fits on a small cluster of machines.

When you write a server for such a model, you have to think about memory, about the network,
and about the order in which requests arrive. Each request is tokenized, placed in a batch,
and processed one step at a time. The sampler picks the next token, the detokenizer turns it
back into text, and the text is streamed to the client as soon as it is ready. If the client
asks for a stop string, the server watches the output and ends the answer right before it.

Questions people often ask: How many tokens per second can it generate? What happens when a
machine fails? Can the same prompt give the same answer twice? Yes, if you fix the seed and
the number of machines, the answer is the same every time.

    #include <cstdint>
    #include <string>
    #include <vector>

    namespace example {

    // Returns the sum of all values in the vector.
    int64_t Sum(const std::vector<int32_t>& values) {
      int64_t total = 0;
      for (int32_t value : values) total += value;
      return total;
    }

    struct Request {
      std::string prompt;
      int max_tokens = 256;
      float temperature = 0.6f;
    };

    class Counter {
     public:
      void Add(int n) { count_ += n; }
      int count() const { return count_; }

     private:
      int count_ = 0;
    };

    }  // namespace example

def tokenize(text, vocab):
    """Split text into the longest tokens found in vocab."""
    tokens = []
    i = 0
    while i < len(text):
        for j in range(len(text), i, -1):
            if text[i:j] in vocab:
                tokens.append(text[i:j])
                i = j
                break
        else:
            tokens.append(text[i])
            i += 1
    return tokens


for index, value in enumerate([3, 1, 4, 1, 5, 9, 2, 6]):
    if value % 2 == 0:
        print(f"{index}: {value} is even")
    else:
        print(f"{index}: {value} is odd")

Numbers appear everywhere: 2025, 3.14159, 1024, 65536, 128, 7168, 129280 and 0.001.
Dates like 2024-12-31 and times like 23:59:59 are common in logs.

今天天气很好，我们去公园散步吧。春天来了，花都开了，小鸟在树上唱歌。
这个模型可以回答问题，也可以写代码。请用中文回答下面的问题：什么是混合专家模型？
混合专家模型把每个词送给少数几个专家，而不是整个网络，所以计算量比较小。
我们的服务器在多台机器上运行，每台机器负责一部分专家。

こんにちは、世界。今日はいい天気ですね。

User: Can you explain what a tokenizer does?
Assistant: A tokenizer turns text into a sequence of numbers that the model understands. It
first splits the text into pieces, for example words, numbers and punctuation, and then merges
the bytes of each piece into the longest known tokens. The same tokenizer turns the numbers the
model produces back into text.

User: What is the capital of France?
Assistant: The capital of France is Paris. It is also the largest city in the country.
)corpus";

}  // namespace

std::string_view SyntheticTrainingText() { return kText; }

}  // namespace tritmoe
